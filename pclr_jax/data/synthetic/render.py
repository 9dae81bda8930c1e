"""Rendering of synthetic 12-lead ECGs from a cardiac dipole, vectorised over a batch of ECGs.

The heart is a time-varying dipole ``d(t)`` (mV) in the Frank coordinate system: ``x`` to the
patient's left, ``y`` to the feet, ``z`` to the back. As in ECGSYN (McSharry et al., IEEE TBME 2003)
each wave is a Gaussian bump; here the bumps are functions of time (not of a phase angle), so QRS
width stays fixed while the QT interval follows the heart rate:

    d(t) = sum_w  vector_w * exp(-(tau_w(t) - center_w)^2 / (2 width_w^2))

where ``tau_w(t)`` is the time from the R peak the wave belongs to (:data:`WAVE_REFERENCE`): the
next R peak for P and Q, the nearest for R, the previous one for S and the late QRS component, and
the previous beat's T peak for the two T halves (so the T wave moves with that beat's QT).

The dipole is projected onto the eight independent leads I, II, V1-V6 with a lead matrix (Dower's
transform, :data:`DOWER`, perturbed per patient and per recording), recording artefacts are added on
those eight leads (baseline wander and mains hum as sinusoids, white noise), and the four remaining
limb leads are derived from I and II: III = II - I, aVR = -(I + II) / 2, aVL = I - II / 2,
aVF = II - I / 2. Einthoven's law (I + III = II) and aVR + aVL + aVF = 0 therefore hold in every
output up to float32 rounding.
"""

from __future__ import annotations

import dataclasses

import numpy as np

WAVES = ("P", "Q", "R", "S", "late", "T1", "T2")
"""The Gaussian waves of one beat; 'late' is the delayed QRS component of bundle-branch block."""

WAVE_REFERENCE = ("next_r", "next_r", "nearest_r", "previous_r", "previous_r", "t_peak", "t_peak")
"""Which time origin each wave of :data:`WAVES` is measured from."""

INDEPENDENT_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
OUTPUT_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

DOWER = np.array(
    [
        # I      II      V1      V2      V3      V4      V5      V6
        [0.632, 0.235, -0.515, 0.044, 0.882, 1.213, 1.125, 0.831],  # x (left)
        [-0.235, 1.066, 0.157, 0.164, 0.098, 0.127, 0.127, 0.076],  # y (feet)
        [0.059, -0.132, -0.917, -1.387, -1.277, -0.601, -0.086, 0.230],  # z (back)
    ]
)
"""Dower's transform (Dower et al., J Electrocardiol 1980), ``(3, 8)``: Frank x, y, z (mV) to the
independent leads :data:`INDEPENDENT_LEADS` (mV); ``leads = dipole @ DOWER``."""

DERIVE_LEADS = np.zeros((8, 12), np.float32)
"""``(8, 12)``: independent leads -> :data:`OUTPUT_LEADS`: I, II and V1-V6 copied, III = II - I,
aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2."""
DERIVE_LEADS[[0, 1, 2, 3, 4, 5, 6, 7], [0, 1, 6, 7, 8, 9, 10, 11]] = 1.0
DERIVE_LEADS[:2, 2:6] = [[-1.0, -0.5, 1.0, -0.5], [1.0, -0.5, -0.5, 1.0]]


@dataclasses.dataclass(frozen=True)
class RenderInputs:
    """Everything that shapes a batch of ``B`` ECGs; all times in seconds, amplitudes in mV.

    Attributes:
        r_peak_s: ``(B, M)`` increasing R-peak times; the first before 0 s, the last after the end.
        t_peak_s: ``(B, M)`` time from each R peak to its T peak (follows the preceding RR).
        wave_center_s: ``(B, 7)`` centre of each wave of :data:`WAVES` from its time origin.
        wave_width_s: ``(B, 7)`` Gaussian standard deviation of each wave.
        wave_leads_mv: ``(B, 7, 8)`` each wave's peak dipole seen on the eight independent leads.
        f_wave_leads_mv: ``(B, 8)`` amplitude of atrial fibrillatory waves on the independent leads
            (zero without atrial fibrillation).
        f_wave: ``(B, 8)`` f-wave timing: carrier Hz and phase (rad), frequency modulation
            (Hz, depth rad, phase rad) and amplitude modulation (Hz, depth, phase rad).
        tone_leads_mv: ``(B, K, 8)`` amplitude of each sinusoidal artefact (baseline wander, mains
            hum) on the independent leads.
        tone_hz: ``(B, K)`` and ``tone_phase``: ``(B, K)`` (rad) of those sinusoids.
        noise_offset: ``(B, 8)`` int start of each lead's white-noise segment in the noise bank.
        noise_std_mv: ``(B, 8)`` standard deviation of each lead's white noise.
    """

    r_peak_s: np.ndarray
    t_peak_s: np.ndarray
    wave_center_s: np.ndarray
    wave_width_s: np.ndarray
    wave_leads_mv: np.ndarray
    f_wave_leads_mv: np.ndarray
    f_wave: np.ndarray
    tone_leads_mv: np.ndarray
    tone_hz: np.ndarray
    tone_phase: np.ndarray
    noise_offset: np.ndarray
    noise_std_mv: np.ndarray

    def __getitem__(self, rows: slice) -> RenderInputs:
        """The inputs of ECGs ``rows`` of the batch."""
        return RenderInputs(
            **{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)}
        )

    def __len__(self) -> int:
        return len(self.r_peak_s)


def _previous_beat(r_peak_s: np.ndarray, n_samples: int, sampling_rate: float) -> np.ndarray:
    """``(B, S)`` int: index of the last R peak at or before each sample.

    Needs ``r_peak_s[:, 0] <= 0``: a bincount of the first sample at or after each R peak,
    accumulated over time."""
    batch = len(r_peak_s)
    first_sample = np.clip(np.ceil(r_peak_s * sampling_rate), 0, n_samples).astype(np.int64)
    first_sample += (n_samples + 1) * np.arange(batch)[:, None]
    marks = np.bincount(first_sample.ravel(), minlength=batch * (n_samples + 1))
    marks = marks.reshape(batch, n_samples + 1)[:, :n_samples]
    return np.cumsum(marks, axis=1) - 1


def render(
    inputs: RenderInputs,
    n_samples: int,
    sampling_rate: float,
    noise_bank: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Renders a batch of ECGs.

    Args:
        inputs: the batch (``B`` ECGs), see :class:`RenderInputs`.
        n_samples: samples per ECG (``S``).
        sampling_rate: Hz.
        noise_bank: 1-D float32 standard-normal samples; lead ``l`` of ECG ``b`` takes
            ``noise_bank[noise_offset[b, l]:][:S]``.
        out: optional ``(B, S, 12)`` float32 C-contiguous array to write into.

    Returns:
        ``(B, S, 12)`` float32 ECGs in mV, leads in :data:`OUTPUT_LEADS` order.
    """
    batch, n_waves, n_tones = len(inputs), len(WAVES), inputs.tone_hz.shape[1]
    if out is None:
        out = np.empty((batch, n_samples, len(OUTPUT_LEADS)), np.float32)
    t = (np.arange(n_samples) / sampling_rate).astype(np.float32)

    # Time from the surrounding R peaks and from the previous beat's T peak, (B, S) each.
    beats = inputs.r_peak_s.shape[1]
    previous = _previous_beat(inputs.r_peak_s, n_samples, sampling_rate)
    previous += beats * np.arange(batch)[:, None]
    r_peak = inputs.r_peak_s.astype(np.float32).ravel()
    tau_previous = t - r_peak[previous]
    tau_next = t - r_peak[previous + 1]
    tau = {
        "previous_r": tau_previous,
        "next_r": tau_next,
        "nearest_r": np.where(tau_previous <= -tau_next, tau_previous, tau_next),
        "t_peak": tau_previous - inputs.t_peak_s.astype(np.float32).ravel()[previous],
    }

    # Basis signals, (B, W, S): the Gaussian waves, the f-wave, the sinusoidal artefacts and the
    # eight noise segments; their lead weights, (B, W, 8).
    basis = np.empty((batch, n_waves + 1 + n_tones + 8, n_samples), np.float32)
    center = inputs.wave_center_s.astype(np.float32)
    inv_width = (1.0 / inputs.wave_width_s).astype(np.float32)
    for w, reference in enumerate(WAVE_REFERENCE):
        z = basis[:, w]
        np.subtract(tau[reference], center[:, w, None], out=z)
        z *= inv_width[:, w, None]
        np.square(z, out=z)
        z *= -0.5
        np.exp(z, out=z)

    f_rows = np.flatnonzero(np.any(inputs.f_wave_leads_mv != 0, axis=1))
    basis[:, n_waves] = 0.0
    if len(f_rows):
        basis[f_rows, n_waves] = _f_wave(inputs.f_wave[f_rows], t)

    two_pi_t = np.float32(2 * np.pi) * t
    tones = basis[:, n_waves + 1 : n_waves + 1 + n_tones]
    np.multiply(inputs.tone_hz.astype(np.float32)[..., None], two_pi_t, out=tones)
    tones += inputs.tone_phase.astype(np.float32)[..., None]
    np.sin(tones, out=tones)

    windows = np.lib.stride_tricks.sliding_window_view(noise_bank, n_samples)
    basis[:, n_waves + 1 + n_tones :] = windows[inputs.noise_offset]

    weights = np.concatenate(
        [
            inputs.wave_leads_mv,
            inputs.f_wave_leads_mv[:, None],
            inputs.tone_leads_mv,
            inputs.noise_std_mv[:, :, None] * np.eye(8),
        ],
        axis=1,
    ).astype(np.float32)
    independent = np.matmul(weights.transpose(0, 2, 1), basis)  # (B, 8, S)
    # Limb leads from I and II: a product with 0, +-1/2 and +-1 only, so each derived value is
    # rounded once and the lead identities hold to float32 rounding.

    np.matmul(independent.transpose(0, 2, 1), DERIVE_LEADS, out=out)
    return out


def _f_wave(params: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``(B, S)`` unit-amplitude fibrillatory waves: an amplitude- and frequency-modulated sine."""
    p = params.astype(np.float32)[:, :, None]
    two_pi_t = np.float32(2 * np.pi) * t
    phase = p[:, 0] * two_pi_t + p[:, 1] + p[:, 3] * np.sin(p[:, 2] * two_pi_t + p[:, 4])
    envelope = 1.0 + p[:, 6] * np.sin(p[:, 5] * two_pi_t + p[:, 7])
    return envelope * np.sin(phase)
