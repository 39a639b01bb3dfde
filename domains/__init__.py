"""Built-in stabfw domains, one module or package each.

Heavy libraries (torch, diffusers, gymnasium, sktime) are imported inside the domain that
needs them; importing this package imports none of them.
"""
