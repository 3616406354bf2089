"""Discrete-event simulator: the real scheduler core and kvstore BlockPool/LeaseTable driven by a
virtual clock, a simulated worker priced by a step-time cost model, and workload replay."""
