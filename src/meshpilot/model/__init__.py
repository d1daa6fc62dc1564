"""The mesh as plain values that every stage imports from below: the IR, resource names, connected
proxies and instances, and which requests a policy is about. No Envoy types, no I/O."""
