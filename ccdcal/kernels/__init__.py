"""Pure numerics on arrays: the sigma-clipped combine engine, bias, dark and flat arithmetic, overscan,
uncertainty, cosmic rays, bad pixels, QA statistics, and the typed options of the optional steps.

Never touches the catalog; the science is defined in docs/design.md, Science.
"""
