"""The Gateway's public API over real services on 127.0.0.1:0, one stack for the package (its
conftest): bad input (`test_bad_input.py`), then streams and the gateway's limits, ending with the
scheduler lost for good (`test_streams.py`: it sorts after the other module and stops the shared
scheduler, so it runs last).
"""
