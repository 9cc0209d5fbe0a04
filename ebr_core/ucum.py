"""Is this a valid UCUM unit code?  A validator of the UCUM grammar over its table of unit atoms.

Why not a package: the UCUM parser on PyPI (``ucumvert``) brings ``pint`` and ``lark`` (6.6 MB)
and costs 0.4 s of import on every station command, which parses the MBR each time; this module
needs neither, because the project only asks *whether* a code is valid UCUM, never converts
(:mod:`ebr_core.spec.units` converts the few units a specification compares).

The grammar is UCUM's (The Unified Code for Units of Measure, version 2.2, section 2, case
sensitive ``c/s`` codes)::

    main-term   ::= "/" term | term
    term        ::= term "." component | term "/" component | component
    component   ::= annotatable annotation | annotatable | annotation | factor | "(" term ")"
    annotatable ::= simple-unit exponent | simple-unit
    simple-unit ::= ATOM | PREFIX METRIC-ATOM
    exponent    ::= ["+" | "-"] digits        factor ::= digits     (digits: 1-9 then 0-9)
    annotation  ::= "{" ASCII 33-126 except curly braces "}"

As UCUM's table of example codes (and NLM's implementation) does, a parenthesised term may carry
an annotation too (``g/(8.h){shift}``).  The tests check this module against that table and the
atoms of ``ucum-essence.xml`` as the ``ucumvert`` package ships them, and against ``ucumvert``'s
parser on generated codes.

The atom tables below are UCUM 2.2's (``ucum-essence.xml``): :data:`METRIC` atoms take a prefix
(``mL``, ``kg``, ``ug``), :data:`NON_METRIC` ones do not (``%``, ``h``, ``[pH]``, ``10*``).
``10*6/mL`` is the atom ``10*`` to the power 6 per millilitre.
"""

from __future__ import annotations

import re

from ebr_core.errors import EbrError


class UcumError(EbrError):
    """Not a valid UCUM unit code; the message says which part is wrong."""


def _atoms(table: str) -> frozenset[str]:
    """A table written as whitespace-separated codes (no UCUM code contains a space)."""
    return frozenset(table.split())


PREFIXES = _atoms("Y Z E P T G M k h da d c m u n p f a z y Ki Mi Gi Ti")

METRIC = _atoms(
    """m s g rad K C cd mol sr Hz N Pa J W A V F Ohm S Wb Cel T H lm lx Bq Gy Sv l L ar t bar
    u eV pc [c] [h] [k] [eps_0] [mu_0] [e] [m_e] [m_p] [G] [g] [ly] gf Ky Gal dyn erg P Bi St
    Mx G Oe Gb sb Lmb ph Ci R RAD REM cal_[15] cal_[20] cal_m cal_IT cal_th cal tex m[H2O]
    m[Hg] eq osm g% kat U [iU] [IU] Np B B[SPL] B[V] B[mV] B[uV] B[10.nV] B[W] B[kW] st mho
    bit By Bd"""
)

NON_METRIC = _atoms(
    """10* 10^ [pi] % [ppth] [ppm] [ppb] [pptr] gon deg ' '' min h d a_t a_j a_g a wk mo_s
    mo_j mo_g mo AU atm [lbf_av] [in_i] [ft_i] [yd_i] [mi_i] [fth_i] [nmi_i] [kn_i] [sin_i]
    [sft_i] [syd_i] [cin_i] [cft_i] [cyd_i] [bf_i] [cr_i] [mil_i] [cml_i] [hd_i] [ft_us]
    [yd_us] [in_us] [rd_us] [ch_us] [lk_us] [rch_us] [rlk_us] [fth_us] [fur_us] [mi_us]
    [acr_us] [srd_us] [smi_us] [sct] [twp] [mil_us] [in_br] [ft_br] [rd_br] [ch_br] [lk_br]
    [fth_br] [pc_br] [yd_br] [mi_br] [nmi_br] [kn_br] [acr_br] [gal_us] [bbl_us] [qt_us]
    [pt_us] [gil_us] [foz_us] [fdr_us] [min_us] [crd_us] [bu_us] [gal_wi] [pk_us] [dqt_us]
    [dpt_us] [tbs_us] [tsp_us] [cup_us] [foz_m] [cup_m] [tsp_m] [tbs_m] [gal_br] [pk_br]
    [bu_br] [qt_br] [pt_br] [gil_br] [foz_br] [fdr_br] [min_br] [gr] [lb_av] [oz_av] [dr_av]
    [scwt_av] [lcwt_av] [ston_av] [lton_av] [stone_av] [pwt_tr] [oz_tr] [lb_tr] [sc_ap]
    [dr_ap] [oz_ap] [lb_ap] [oz_m] [lne] [pnt] [pca] [pnt_pr] [pca_pr] [pied] [pouce]
    [ligne] [didot] [cicero] [degF] [degR] [degRe] [Cal] [Btu_39] [Btu_59] [Btu_60] [Btu_m]
    [Btu_IT] [Btu_th] [Btu] [HP] [den] [in_i'H2O] [in_i'Hg] [PRU] [wood'U] [diop] [p'diop]
    %[slope] [mesh_i] [Ch] [drp] [hnsf'U] [MET] [hp'_X] [hp'_C] [hp'_M] [hp'_Q] [hp_X]
    [hp_C] [hp_M] [hp_Q] [kp_X] [kp_C] [kp_M] [kp_Q] [pH] [S] [HPF] [LPF] [arb'U] [USP'U]
    [GPL'U] [MPL'U] [APL'U] [beth'U] [anti'Xa'U] [todd'U] [dye'U] [smgy'U] [bdsk'U] [ka'U]
    [knk'U] [mclg'U] [tb'U] [CCID_50] [TCID_50] [EID_50] [PFU] [FFU] [CFU] [IR] [BAU] [AU]
    [Amb'a'1'U] [PNU] [Lf] [D'ag'U] [FEU] [ELU] [EU] Ao b att [psi] circ sph [car_m]
    [car_Au] [smoot] [m/s2/Hz^(1/2)] [NTU] [FNU] bit_s"""
)

MAX_LENGTH = 64
_EXPONENT = re.compile(r"(.*?)([+-]?[1-9][0-9]*)")
_FACTOR = re.compile(r"[1-9][0-9]*")
_ANNOTATION = re.compile(r"\{[!-z|~]*\}")


def check_ucum(code: str) -> None:
    """Raise :class:`UcumError` unless ``code`` is a valid UCUM (case-sensitive) unit code."""
    if not isinstance(code, str) or not code:
        raise UcumError("a UCUM unit code is a non-empty string such as 'mL' or '10*6/mL'")
    if len(code) > MAX_LENGTH or not all("!" <= c <= "~" for c in code):
        raise UcumError(
            f"{code!r} is not a UCUM code: printable ASCII without spaces, "
            f"at most {MAX_LENGTH} characters"
        )
    body = code[1:] if code.startswith("/") else code
    _term(body, code)


def is_ucum(code: str) -> bool:
    try:
        check_ucum(code)
    except UcumError:
        return False
    return True


def _term(text: str, code: str) -> None:
    """``term``: components joined by ``.`` or ``/`` (outside brackets, braces, parentheses)."""
    for part in _split(text, code):
        if not part:
            raise UcumError(
                f"{code!r} is not a UCUM code: a '.' or '/' must stand between two units"
            )
        _component(part, code)


def _split(text: str, code: str) -> list[str]:
    parts: list[str] = []
    depth: list[str] = []
    start = 0
    closing = {"[": "]", "{": "}", "(": ")"}
    for i, c in enumerate(text):
        if depth and depth[-1] == "}":  # inside an annotation: anything but braces
            if c == "}":
                depth.pop()
            elif c == "{":
                raise UcumError(f"{code!r} is not a UCUM code: '{{' inside an annotation")
            continue
        if c in closing:
            depth.append(closing[c])
        elif c in ")]}":
            if not depth or depth.pop() != c:
                raise UcumError(f"{code!r} is not a UCUM code: unbalanced {c!r}")
        elif c in "./" and not depth:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise UcumError(f"{code!r} is not a UCUM code: {depth[-1]!r} is missing")
    parts.append(text[start:])
    return parts


def _component(part: str, code: str) -> None:
    annotation = re.search(r"\{[^{}]*\}$", part)
    if annotation:
        if not _ANNOTATION.fullmatch(annotation.group()):
            raise UcumError(f"{code!r} is not a UCUM code: bad annotation {annotation.group()!r}")
        part = part[: annotation.start()]
        if not part:
            return  # an annotation alone, e.g. {cells}
    # A parenthesised term, annotated or not: UCUM's own table of example codes writes
    # ``g/(8.h){shift}`` and ``U/(10.g){feces}``.
    if part.startswith("(") and part.endswith(")") and _closes_at_end(part):
        _term(part[1:-1], code)
        return
    if _FACTOR.fullmatch(part):
        return  # a factor, e.g. 1 or 1000
    m = _EXPONENT.fullmatch(part)
    unit = m.group(1) if m and m.group(1) else part
    if unit in METRIC or unit in NON_METRIC:
        return
    for n in (2, 1):
        if unit[:n] in PREFIXES and unit[n:] in METRIC:
            return
    for n in (2, 1):
        if unit[:n] in PREFIXES and unit[n:] in NON_METRIC:
            raise UcumError(
                f"{code!r} is not a UCUM code: {unit[n:]!r} is not a metric unit and takes no "
                f"prefix ({unit[:n]!r})"
            )
    raise UcumError(
        f"{code!r} is not a UCUM code: {unit!r} is not a UCUM unit (case matters: 'Cel', 'mL', "
        "'h', '%', '[pH]', '10*6/mL')"
    )


def _closes_at_end(part: str) -> bool:
    """Does the opening parenthesis close at the very end (``(m/s)``, not ``(m).(s)``)?
    Parentheses inside an annotation (``{)}``) or an atom's brackets do not count."""
    depth, inside = 0, ""
    for i, c in enumerate(part):
        if inside:
            inside = "" if c == inside else inside
            continue
        if c in "{[":
            inside = "}" if c == "{" else "]"
        depth += c == "("
        depth -= c == ")"
        if depth == 0:
            return i == len(part) - 1
    return False
