import pytest

# The contract mixins live in plain modules: let pytest rewrite their asserts too.
pytest.register_assert_rewrite(f"{__name__}.store_contract")
