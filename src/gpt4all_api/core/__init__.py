"""The dialect-neutral core: a request becomes a `Plan`; a plan becomes a prompt and a `Run` on
the engine; a run's events become neutral reply events that each dialect renders its own way.

    dialect protocol ─translate→ Plan ─prompt.build→ tokens ─run.start→ Run ─reply→ events
"""
