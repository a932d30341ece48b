"""Hypothesis strategies for OIP v2 infer bodies, shared by the codec fuzz test and the HTTP
fuzz tests of the servers: request-shaped JSON with wrong types, shapes, datatypes and data,
and odd ``Inference-Header-Content-Length`` values. ``FUZZ`` bounds every such test."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from modulemesh import oip

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)

header_lengths = st.one_of(
    st.none(),
    st.integers(min_value=-8, max_value=4096),
    st.sampled_from(["", "0", "-1", "abc", "1e3", " 12", "99999999999999999999"]),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=24,
)
datatypes = st.one_of(st.sampled_from(sorted(oip.DATATYPES)), st.text(max_size=6), scalars)
shapes = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=6), max_size=4),
    st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=3),
    json_values,
)
tensors = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=6), scalars),
        "datatype": datatypes,
        "shape": shapes,
        "data": json_values,
        "parameters": st.one_of(
            json_values,
            st.fixed_dictionaries({"binary_data_size": st.one_of(st.integers(-4, 64), scalars)}),
        ),
    },
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": scalars,
        "inputs": st.one_of(st.lists(tensors, max_size=3), json_values),
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries({}, optional={"name": scalars, "parameters": json_values}),
                max_size=3,
            ),
            json_values,
        ),
        "parameters": json_values,
    },
)
