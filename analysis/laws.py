"""Scaling laws as pure functions of arrays (broadcasting), the formula in each docstring.

N: parameters, D: training tokens, C: training FLOPs, M = D / N: tokens per parameter.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def flops_6nd(N: ArrayLike, D: ArrayLike) -> np.ndarray:
    """Approximate training compute of a dense transformer (Kaplan et al. 2020), for tables without a
    config (tiedattn.accounting.training_flops is the exact count of a ModelConfig):

    C = 6 * N * D
    """
    return 6.0 * np.asarray(N, dtype=float) * np.asarray(D, dtype=float)


def chinchilla(
    N: ArrayLike, D: ArrayLike, E: ArrayLike, A: ArrayLike, B: ArrayLike, alpha: ArrayLike, beta: ArrayLike
) -> np.ndarray:
    """Chinchilla loss surface (Hoffmann et al. 2022, approach 3):

    L(N, D) = E + A / N**alpha + B / D**beta
    """
    N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
    return E + A * N ** np.negative(alpha) + B * D ** np.negative(beta)


def chinchilla_at(
    C: ArrayLike, M: ArrayLike, E: ArrayLike, A: ArrayLike, B: ArrayLike, alpha: ArrayLike, beta: ArrayLike
) -> np.ndarray:
    """The Chinchilla surface along a token multiplier: with C = 6 N D and D = M N,

    N = sqrt(C / (6 M)),  D = M * N,  L(C, M) = E + A / N**alpha + B / D**beta
    """
    N = np.sqrt(np.asarray(C, dtype=float) / (6.0 * np.asarray(M, dtype=float)))
    return chinchilla(N, np.asarray(M, dtype=float) * N, E, A, B, alpha, beta)


def chinchilla_optimal(
    C: ArrayLike, E: ArrayLike, A: ArrayLike, B: ArrayLike, alpha: ArrayLike, beta: ArrayLike
) -> np.ndarray:
    """Compute-optimal loss of the Chinchilla surface (Hoffmann et al. 2022, eq. 4):

    N_opt = G * (C / 6)**(beta / (alpha + beta)),  G = (alpha * A / (beta * B))**(1 / (alpha + beta)),
    D_opt = (C / 6) / N_opt,  L_opt(C) = L(N_opt, D_opt)
    """
    half = np.asarray(C, dtype=float) / 6.0
    G = (np.multiply(alpha, A) / np.multiply(beta, B)) ** (1.0 / np.add(alpha, beta))
    N = G * half ** (np.divide(beta, np.add(alpha, beta)))
    return chinchilla(N, half / N, E, A, B, alpha, beta)


def overtraining(C: ArrayLike, M: ArrayLike, E: ArrayLike, a: ArrayLike, b: ArrayLike, eta: ArrayLike) -> np.ndarray:
    """Over-training law (Gadre et al. 2024, eq. 4), C the training FLOPs and M = D / N:

    L(C, M) = E + (a * M**eta + b * M**-eta) * C**-eta
    """
    C, M = np.asarray(C, dtype=float), np.asarray(M, dtype=float)
    return E + (a * M**eta + b * M ** np.negative(eta)) * C ** np.negative(eta)
