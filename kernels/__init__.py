"""Triton kernels for the denoiser (installed as `copgen_rt.kernels`)."""
