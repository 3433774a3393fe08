"""Memory tasks and baselines for the book's chapter on long-range memory.

Three tasks, generated here (nothing is downloaded):
* copying with a delay: a symbol (one of K, one-hot) at step 0, blanks, a recall marker at the last step;
  the label is the symbol, so the model must carry it across the whole sequence;
* the adding problem (Hochreiter and Schmidhuber 1997): channel 0 holds values in U[0, 1), channel 1 marks
  two positions, one in each half; the target is the sum of the two marked values (a regression);
* sequential digits: scikit-learn's bundled 8 × 8 digits read pixel by pixel, a 64-step sequence of one
  channel (the small cousin of sequential MNIST).

Glossary (SPEC §1): b batch, L length; every input is (b, L, channels) float32.
"""
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def copy_task(rng, samples, delay, symbols=8):
    """x (b, delay + 1, symbols + 1), labels (b,): recall at step `delay` the symbol shown at step 0."""
    labels = rng.integers(symbols, size=samples)                                 # (b,)
    x = np.zeros((samples, delay + 1, symbols + 1), np.float32)                  # (b, L, K + 1)
    x[np.arange(samples), 0, labels] = 1.0                                       # the symbol, one-hot
    x[:, -1, symbols] = 1.0                                                      # the recall marker
    return x, labels


def adding_task(rng, samples, L):
    """x (b, L, 2), targets (b,): the sum of the two values marked in channel 1, one in each half."""
    values = rng.uniform(0, 1, (samples, L))                                     # (b, L)
    marks = np.zeros((samples, L))                                               # (b, L)
    marks[np.arange(samples), rng.integers(0, L // 2, samples)] = 1.0
    marks[np.arange(samples), rng.integers(L // 2, L, samples)] = 1.0
    x = np.stack([values, marks], axis=-1).astype(np.float32)                    # (b, L, 2)
    return x, (values * marks).sum(axis=1).astype(np.float32)


def sequential_digits(test_size=0.25, seed=0):
    """(x_train, y_train, x_test, y_test): 8 × 8 digits as (b, 64, 1) pixel sequences in [0, 1], stratified split."""
    images, labels = load_digits(return_X_y=True)                                # (1797, 64), (1797,)
    x = (images / 16.0).astype(np.float32)[:, :, None]                           # (b, 64, 1)
    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels,
                                   random_state=seed)
    return x[train], labels[train], x[test], labels[test]


class GatedRNN(torch.nn.Module):
    """nn.GRU or nn.LSTM (one layer, `hidden` units) read out from its last hidden state by a linear head."""

    def __init__(self, kind, input_dim, hidden, outputs):
        super().__init__()
        self.rnn = getattr(torch.nn, kind)(input_dim, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, outputs)

    def forward(self, x, lengths=None, integration_timesteps=None):
        return self.head(self.rnn(x)[0][:, -1])                                  # (b, outputs)


def train(model, x, y, *, epochs, lr, batch_size=32, regression=False, frozen=()):
    """AdamW with a one-cycle schedule; cross-entropy (classes) or mean squared error (regression).

    `frozen`: names of parameters that keep their initial value (an ablation). Returns the seconds spent.
    """
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name not in frozen)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    steps = -(-len(y) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for first in range(0, len(y), batch_size):
            batch = order[first:first + batch_size]
            output = model(x[batch])
            loss = (torch.nn.functional.mse_loss(output[:, 0], y[batch]) if regression
                    else torch.nn.functional.cross_entropy(output, y[batch]))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return time.perf_counter() - start


@torch.no_grad()
def score(model, x, y, regression=False):
    """Accuracy (classes) or mean squared error (regression) of `model` in evaluation mode."""
    model.eval()
    output = model(torch.as_tensor(x))
    if regression:
        return float(((output[:, 0] - torch.as_tensor(y)) ** 2).mean())
    return float((output.argmax(dim=1) == torch.as_tensor(y)).float().mean())
