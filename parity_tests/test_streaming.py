"""The backend's streaming classifier (SPEC §6.1) against the reference's whole-sequence forward: after every
event, `step` returns the reference forward on the events seen so far (random mixer stacks, pooling modes
and factors, final poolings, τ with zeros)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.classifier import Classifier
from parity_tests.backend import check
from parity_tests.strategies import classifier_configs, classifier_inputs


@settings(max_examples=15)
@given(data=st.data())
def test_streaming_classifier_equals_forward_on_every_prefix(backend, dtype, data):
    config = data.draw(classifier_configs(max_layers=3, max_width=4), label="config")
    x, _, tau = data.draw(classifier_inputs(config, max_len=12, with_lengths=False), label="inputs")
    reference = Classifier(**config)
    from_reference, cast = backend.require("from_reference", "cast")
    module = cast(from_reference(reference), dtype, backend.device)
    state, outputs = module.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = module.step(backend.to(x[:, t], dtype), state,
                                 None if tau is None else backend.to(tau[:, t], dtype))
        outputs.append(backend.to_numpy(y_t))
    expected = np.stack([reference(x[:, :n], integration_timesteps=None if tau is None else tau[:, :n])
                         for n in range(1, x.shape[1] + 1)], axis=1)
    check(np.stack(outputs, axis=1), expected, dtype=dtype, subject="Classifier", prop="streaming step")
