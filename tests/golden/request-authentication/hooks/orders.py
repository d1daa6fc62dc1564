def check(request):
    return request.claims.get("tier") != "trial"
