"""The top floor: what runs the services rather than being one. The `llmserve` command (`cli`),
the local launcher and supervisor of a stack (`launch`, `supervisor`), the in-process engine
(`engine`), `llmserve bench` and its live replay (`bench`, `live`), and the worker step timing of
the simulator's calibration (`measure`). It may import every service; only tests and benchmarks
import it (tests/contract/test_layers.py)."""
