"""Lead names and limb-lead algebra shared by the ECG readers.

Hand-written glue: the spellings hospital exports, WFDB headers and DICOM channel definitions use for
the twelve standard leads, and the Einthoven/Goldberger relations between the six limb leads.
"""

from __future__ import annotations

import re

import numpy as np

from ..records import CANONICAL_LEADS, LIMB_LEADS

# Normalised spelling (lower case, no blanks/punctuation) -> canonical name.
_ALIASES: dict[str, str] = {
    "i": "I", "di": "I", "d1": "I",
    "ii": "II", "dii": "II", "d2": "II",
    "iii": "III", "diii": "III", "d3": "III",
    "avr": "aVR", "avl": "aVL", "avf": "aVF",
}
for _k in range(1, 7):
    _ALIASES[f"v{_k}"] = f"V{_k}"
    _ALIASES[f"c{_k}"] = f"V{_k}"  # IEC chest-lead notation

# "(Einthoven)", "(Goldberger)", "(Wilson)" qualifiers in DICOM code meanings.
_QUALIFIER = re.compile(r"\(\s*(einthoven|goldberger|wilson|unipolar|bipolar|augmented)\s*\)", re.I)
# A trailing unit: "I_uV", "V1 (mV)", "aVR [uV]", "II-mv".
_UNIT_SUFFIX = re.compile(
    r"[\s_\-]*[(\[]?\s*(uv|µv|μv|mv|microvolts?|millivolts?|counts?|adu)\s*[)\]]?\s*$", re.I
)
_PREFIX = re.compile(r"^\s*(ecg|ekg|lead)[\s_\-:.]*", re.I)
_PUNCT = re.compile(r"[\s_\-.:]+")

# DICOM channel source codes (SCPECG "5.6.3-9-N" and MDC "2:N" share the numbering).
_CODE_NUMBERS: dict[str, str] = {
    "1": "I", "2": "II", "61": "III", "62": "aVR", "63": "aVL", "64": "aVF",
    "3": "V1", "4": "V2", "5": "V3", "6": "V4", "7": "V5", "8": "V6",
}

# Limb leads as combinations of (I, II): lead = a * I + b * II.
_LIMB_BASIS: dict[str, tuple[float, float]] = {
    "I": (1.0, 0.0),
    "II": (0.0, 1.0),
    "III": (-1.0, 1.0),  # Einthoven: III = II - I
    "aVR": (-0.5, -0.5),  # Goldberger: aVR = -(I + II) / 2
    "aVL": (1.0, -0.5),  # aVL = I - II / 2
    "aVF": (-0.5, 1.0),  # aVF = II - I / 2
}


def canonical_lead_name(name: object) -> str | None:
    """Return the canonical lead name (``"I"`` ... ``"V6"``) for a channel label, or ``None``.

    Tolerates case, blanks, a ``Lead``/``ECG`` prefix, a unit suffix (``I_uV``, ``V1 (mV)``),
    DICOM qualifiers (``Lead I (Einthoven)``), ``DI``/``DII``/``DIII`` and ``C1``-``C6``.
    Anything else (``V4R``, ``Pleth``, an inverted ``-aVR``) gives ``None``.
    """
    if name is None:
        return None
    text = str(name).strip()
    if not text or text.startswith("-"):
        return None
    text = _QUALIFIER.sub("", text)
    text = _UNIT_SUFFIX.sub("", text)
    text = _PREFIX.sub("", text)
    key = _PUNCT.sub("", text).lower()
    return _ALIASES.get(key)


def dicom_lead_name(code_value: str | None, scheme: str | None, meaning: str | None) -> str | None:
    """Canonical lead for a DICOM channel source code (SCPECG or MDC), falling back to its meaning."""
    if code_value and scheme and scheme.upper() in ("SCPECG", "MDC"):
        number = re.split(r"[-:]", str(code_value).strip())[-1]
        if number in _CODE_NUMBERS:
            return _CODE_NUMBERS[number]
    return canonical_lead_name(meaning)


def derive_limb_leads(present: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Derive the missing limb leads from two present ones (Einthoven/Goldberger).

    Args:
        present: lead name -> ``(samples,)`` signal, for the leads really recorded.

    Returns:
        The limb leads that were missing and could be derived (empty when fewer than two limb leads
        are present). Any two distinct limb leads are linearly independent, so two are enough.
    """
    have = [lead for lead in LIMB_LEADS if lead in present]
    if len(have) < 2 or len(have) == len(LIMB_LEADS):
        return {}
    a, b = have[0], have[1]
    basis = np.array([_LIMB_BASIS[a], _LIMB_BASIS[b]])  # rows: (coef_I, coef_II) of a and b
    inverse = np.linalg.inv(basis)  # [I, II] = inverse @ [a, b]
    pair = np.stack([present[a], present[b]]).astype(np.float64)  # (2, samples)
    lead_i, lead_ii = inverse @ pair
    derived = {}
    for lead in LIMB_LEADS:
        if lead not in present:
            ci, cii = _LIMB_BASIS[lead]
            derived[lead] = ci * lead_i + cii * lead_ii
    return derived


def canonical_order(leads: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The given canonical leads sorted into :data:`CANONICAL_LEADS` order."""
    wanted = set(leads)
    return tuple(lead for lead in CANONICAL_LEADS if lead in wanted)
