"""@njit kernels only: activations, weight packing, the fused cell and the sequence drivers."""
