"""Data and training helpers for the book's chapters on real data (JapaneseVowels) and event streams.

The data set ships inside the `aeon` package (no download): 640 utterances of the Japanese vowel /ae/
by nine speakers, each a sequence of 7–29 frames of 12 LPC cepstrum coefficients; the task is to
name the speaker (Kudo, Toyama and Shimbo 1999; UCI / UEA archive split: 270 train, 370 test).
Sequences are padded to one array per batch with their lengths — padding never changes a result.

Glossary (SPEC §1): b batch, L length, H channels (here 12 input features).
"""
import sys
import time

import numpy as np
import torch
from aeon.datasets import load_japanese_vowels
from tqdm import tqdm


def load_split(split):
    """(list of (len_i, 12) float arrays, int labels 0..8) for split "train" or "test"."""
    X, y = load_japanese_vowels(split=split)                     # X: list of (12, len_i) arrays
    return [np.asarray(x, dtype=np.float64).T for x in X], np.asarray(y).astype(int) - 1


def pad(sequences, tau=None):
    """Pad a list of (len_i, H) arrays (and optional (len_i,) timesteps) to one batch.

    Returns x (b, L, H) float32 with zeros after each sequence, lengths (b,) int64, and τ (b, L)
    float32 (zeros in the padding) or None.
    """
    lengths = np.array([len(s) for s in sequences])
    x = np.zeros((len(sequences), lengths.max(), sequences[0].shape[1]), np.float32)    # (b, L, H)
    tau_out = None if tau is None else np.zeros(x.shape[:2], np.float32)                 # (b, L)
    for i, s in enumerate(sequences):
        x[i, :len(s)] = s
        if tau is not None:
            tau_out[i, :len(s)] = tau[i]
    return x, lengths, tau_out


def standardise(train, *others):
    """Scale every feature to zero mean and unit variance over the valid training frames."""
    frames = np.concatenate(train)                                # (Σ len, H)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    return [[(s - mean) / std for s in split] for split in (train, *others)]


def drop_frames(sequences, keep, rng):
    """Irregular event streams: keep each frame with probability `keep` (always at least one).

    A frame at index i happened at time i (one frame period = one time unit). Returns the kept frames
    and their integration timesteps as backward differences, τ_t = time_t − time_{t−1}, with the
    first gap measured from time −1 (so τ ≡ 1 when every frame is kept).
    """
    events, gaps = [], []
    for s in sequences:
        kept = np.flatnonzero(rng.uniform(size=len(s)) < keep)
        if kept.size == 0:
            kept = np.array([rng.integers(len(s))])
        events.append(s[kept])
        gaps.append(np.diff(kept, prepend=-1).astype(np.float64))  # backward differences
    return events, gaps


def as_tensors(x, lengths, tau=None):
    return (torch.as_tensor(x), torch.as_tensor(lengths), None if tau is None else torch.as_tensor(tau))


@torch.no_grad()
def predict(model, x, lengths, tau=None):
    """Logits (b, num_classes) of `model` in evaluation mode."""
    model.eval()
    return model(*as_tensors(x, lengths, tau))


def validation_split(labels, fraction=0.2, seed=0):
    """(train indices, validation indices): a stratified, seeded split of the training set (every class kept in
    proportion), so that every choice — epochs, learning rate, the asserted floor — is made without the test set."""
    from sklearn.model_selection import train_test_split
    indices = np.arange(len(labels))
    return train_test_split(indices, test_size=fraction, stratify=labels, random_state=seed)


def fit(model, train, validation=None, *, epochs, batch_size=16, lr=5e-3, weight_decay=0.01, use_tau=True,
        desc="training", progress=True):
    """Train `model` with AdamW and a one-cycle learning rate; return the history per epoch.

    train, validation: (x (b, L, H), lengths (b,), labels (b,), τ (b, L) or None); the validation set (never
    the test set) is evaluated after every epoch, or nothing is when it is None. Each mini-batch is cut to
    its own longest sequence. `use_tau=False` trains a model that never sees the timesteps;
    `progress=False` hides the progress bar (one line per epoch, printed when training ends).
    Returns {"loss", "train_accuracy", "validation_accuracy", "seconds"} (lists per epoch, total seconds).
    """
    x, lengths, labels, tau = train
    x, lengths, labels = torch.as_tensor(x), torch.as_tensor(lengths), torch.as_tensor(labels)
    tau = torch.as_tensor(tau) if (tau is not None and use_tau) else None
    steps = -(-len(labels) // batch_size)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=epochs * steps)
    history = {"loss": [], "train_accuracy": [], "validation_accuracy": []}
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, file=sys.stdout, ncols=100, ascii=True, mininterval=600, disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(labels))
        total_loss, correct = 0.0, 0
        for first in range(0, len(labels), batch_size):
            batch = order[first:first + batch_size]
            L = int(lengths[batch].max())
            logits = model(x[batch, :L], lengths[batch], None if tau is None else tau[batch, :L])
            loss = torch.nn.functional.cross_entropy(logits, labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(dim=1) == labels[batch]).sum())
        history["loss"].append(total_loss / len(labels))
        history["train_accuracy"].append(correct / len(labels))
        if validation is not None:
            logits = predict(model, validation[0], validation[1], validation[3] if use_tau else None)
            history["validation_accuracy"].append(float((logits.argmax(dim=1).numpy() == validation[2]).mean()))
            bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", validation=f"{history['validation_accuracy'][-1]:.3f}",
                            refresh=False)
    bar.close()
    history["seconds"] = time.perf_counter() - start
    return history
