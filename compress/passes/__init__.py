"""The compression passes, one module per kind; each registers its passes in compress.registry.PASSES on import.

A new pass is a frozen config dataclass plus a handler with `@register_pass(name, ConfigType, flags...)` in a
module here: nothing else lists it.
"""
