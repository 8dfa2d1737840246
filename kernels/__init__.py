"""Triton kernels (shipped as ``loglik.kernels``): @triton.jit functions and their launch helpers, one module per
core. No autograd and no nn.Module here; ``loglik.autograd`` wires them to torch. Importing this package does not
import Triton: each submodule does, so ``import loglik`` works without Triton.
"""
