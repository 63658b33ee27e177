"""The loss terms, one module per family of terms; each registers its terms in distill.losses.LOSSES on import.

A new term is a function here plus its `@register(name, flags...)`: nothing else lists it.
"""
