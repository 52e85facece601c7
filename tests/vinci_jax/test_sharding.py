import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from vinci_jax import sharding


def test_eight_fake_devices_are_visible():
    assert jax.device_count() == 8


def test_make_mesh_fills_minus_one_axis():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 2, "tensor": 2})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


@pytest.mark.parametrize("shape", [{"data": 3}, {"data": -1, "fsdp": 3}, {"data": -1, "fsdp": -1}, {"pipe": 2}])
def test_make_mesh_rejects_impossible_shapes(shape):
    with pytest.raises(ValueError):
        sharding.make_mesh(shape)


def test_logical_rules_skip_indivisible_dims_and_reuse():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    assert sharding.logical_to_spec(("embed", "mlp"), (8, 6), mesh) == P("fsdp", "tensor")
    # 3 KV heads cannot split over tensor=2: replicated instead of an error.
    assert sharding.logical_to_spec(("embed", "kv_heads"), (8, 3), mesh) == P("fsdp", None)
    assert sharding.logical_to_spec(("batch", "seq"), (4, 5), mesh) == P(("data", "fsdp"), None)
    # batch 2 only divides by data.
    assert sharding.logical_to_spec(("batch", "seq"), (2, 5), mesh) == P("data", None)


def test_shard_module_places_params_and_keeps_values():
    class Tiny(nnx.Module):
        def __init__(self):
            self.w = sharding.param(jnp.arange(32.0).reshape(8, 4), "embed", "mlp")
            self.b = sharding.param(jnp.ones((4,)), "mlp")

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    model = sharding.shard_module(Tiny(), mesh)
    assert model.w.get_value().sharding.spec == P("fsdp", "tensor")
    np.testing.assert_array_equal(np.asarray(model.w.get_value()), np.arange(32.0).reshape(8, 4))


def test_constrain_is_noop_without_mesh_and_applies_with_one():
    x = jnp.ones((8, 4))
    assert sharding.constrain(x, ("batch", None)) is x
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        y = jax.jit(lambda a: sharding.constrain(a * 2, ("batch", None)))(x)
    assert y.sharding.is_equivalent_to(jax.sharding.NamedSharding(mesh, P(("data", "fsdp"), None)), 2)
