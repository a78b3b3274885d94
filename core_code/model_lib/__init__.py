"""Model architectures (torch only): abcMLP, Stack, abcStack and their layers.

Each architecture module defines its class, ``DEFAULTS`` (every config key it accepts)
and ``init_config_<name>``; ``core_code.create_model`` registers them.
"""
