"""Pure numpy / torch twins of every loglik kernel, float64-capable, never importing compiled code.

Each kernel ``loglik.foo`` has ``loglik.reference.foo`` with the same signature (where the kernel's extra options
are implementation choices, the reference accepts and ignores them). Tests compare the two; users can read these
to see exactly what a kernel computes.
"""
