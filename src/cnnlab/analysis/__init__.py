"""Measurements of the lecture's two claims, on the user's own models and data.

``branches``: which of an Inception module's four branches a trained net relies on.
``gradients``: how gradient norms at initialisation, and trainability, change with depth in plain
and residual conv stacks. ``plots`` only draws what those two computed. ``cli`` adds ``cnnlab analyze``.
"""
