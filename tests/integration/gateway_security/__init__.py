"""Hostile and foreign callers of the gateway, over one in-process backend shared by the package
(its conftest): API keys and quotas, bounds on input, fuzzing of both fronts."""
