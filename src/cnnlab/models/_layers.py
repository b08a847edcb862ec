"""Shape arithmetic shared by the lecture's nets."""


def conv_pool_size(size: int, kernel: int = 5, pool: int = 2) -> int:
    """Spatial size after an unpadded ``kernel`` conv followed by a ``pool`` max-pool.

    28 -> (28 - 5 + 1) // 2 = 12 -> (12 - 5 + 1) // 2 = 4 for the lecture's two stages.
    """
    out = (size - kernel + 1) // pool
    if out < 1:
        raise ValueError(f"image size {size} is too small for a {kernel}x{kernel} conv and {pool}x{pool} pool")
    return out
