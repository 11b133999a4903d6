"""The bit-layout explorer: how fp32, fp16 and bf16 store a number (chapter "Quantization", number formats).

bit_layout_html: one value's sign, exponent and mantissa bits as coloured boxes, with the value they decode to
(read by ``lab_utils.formats.decode``). format_explorer: type a number, see its three layouts; live with a kernel
(ipywidgets), and on the book's page a self-contained HTML/JS view that does the same in the browser. The page
rounds as PyTorch does: a double goes to fp32 first (DataView.setFloat32, round to nearest even), and fp16/bf16
are rounded from those fp32 bits, as c10's ``Half(float)``/``BFloat16(float)`` do (so 1 + 2^-8 + 2^-30 is 1.0 in
bf16 through fp32, not 1.0078125 as one direct rounding would give). Numbers are written as Python's ``repr``.
"""

from __future__ import annotations

import html
import json
import math
import re

import ipywidgets as w
import torch
from IPython.display import display

from lab_utils.formats import FORMATS, Decoded, FloatFormat, decode, get_format
from lab_utils.widgets.static import STATIC_VIEW_ATTR, DualView

__all__ = ["FormatExplorer", "bit_layout_html", "explorer_html", "explorer_result_html", "format_explorer",
           "parse_value"]

ALL = "all"  # the format choice that shows the three layouts
# What the text box accepts, in Python and on the page alike: a decimal number, inf/infinity or nan (any case).
NUMBER_PATTERN = r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|[+-]?(inf|infinity|nan)"
# Colours of the three fields (sign blue, exponent green, mantissa red, as in the usual IEEE 754 diagrams); the
# text is set black so that the boxes read on a dark theme too. Shared with the page's script through its config.
STYLES = {
    "layout": "margin:0.6em 0",
    "boxes": "font-family:monospace;line-height:2",
    "s": "background:#b4d7ff;color:#000;padding:0.15em 0.3em;margin-right:1px;border-radius:2px",
    "e": "background:#b9f2b9;color:#000;padding:0.15em 0.3em;margin-right:1px;border-radius:2px",
    "m": "background:#ffc9c9;color:#000;padding:0.15em 0.3em;margin-right:1px;border-radius:2px",
    "error": "color:#b00",
}
_TITLES = {"s": "sign", "e": "exponent", "m": "mantissa"}


def _r(v: float) -> str:
    """A number as the page writes it (the page's ``pyRepr`` copies Python's ``repr``)."""
    return repr(float(v))


def _layout(x: float, d: Decoded, f: FloatFormat) -> str:
    """The HTML of one decoded value; the page's ``layoutHtml`` builds the same string."""
    s, eb, mb = str(d.sign), d.exponent_bits, d.mantissa_bits
    boxes = "".join(f"<span class='lab-bit-{k}' title='{_TITLES[k]}' style='{STYLES[k]}'>{b}</span>"
                    for k, bits in (("s", s), ("e", eb), ("m", mb)) for b in bits)
    if d.kind in ("normal", "subnormal", "zero"):
        if d.kind == "normal":
            fields = f"exponent {eb} = {int(eb, 2)} - {f.bias} = {d.exponent}; mantissa 1.{mb} = {_r(d.mantissa_value)}"
        else:  # exponent field 0: no implicit 1, and the exponent of the smallest normals, 1 - bias
            fields = (f"exponent {eb}: subnormal, 1 - {f.bias} = {d.exponent}; mantissa 0.{mb} = "
                      f"{_r(d.mantissa_value)} (no implicit 1)")
        value = f"(-1)<sup>{s}</sup> &times; {_r(d.mantissa_value)} &times; 2<sup>{d.exponent}</sup> = {_r(d.value)}"
    elif d.kind == "inf":
        fields, value = "exponent all ones, mantissa all zeros: infinity", _r(d.value)
    else:
        fields, value = "exponent all ones, mantissa not all zeros: not a number", _r(d.value)
    if math.isnan(x) or d.kind == "nan":
        note = ""
    elif d.kind == "inf" and math.isfinite(x):
        note = f"; overflow: |x| &gt; max {_r(f.max)}"
    elif d.value == 0 and x != 0:
        note = "; underflow: x became zero"
    elif math.isfinite(x) and math.isfinite(d.value):
        note = f"; stored - x = {_r(d.value - x)}"
    else:
        note = ""
    return (f"<div class='lab-bit-layout' data-format='{f.name}' data-bits='{s} {eb} {mb}' style='{STYLES['layout']}'>"
            f"<div><b>{f.name}</b> <small>1 sign, {f.exponent_bits} exponent, {f.mantissa_bits} mantissa bits; "
            f"bias {f.bias}</small></div><div style='{STYLES['boxes']}'>{boxes}</div>"
            f"<div>{fields}</div><div>{value} <i>({d.kind})</i>{note}</div></div>")


def bit_layout_html(x: float | torch.Tensor, fmt: str | FloatFormat | torch.dtype = "fp32") -> str:
    """`x` in `fmt` as coloured boxes (sign, exponent, mantissa, most significant bit first) and its decoded value.

    Args:
        x: a Python number or a one-element tensor; rounded to `fmt` as ``lab_utils.formats.decode`` rounds it.
        fmt: "fp32", "fp16", "bf16", a torch dtype or a ``FloatFormat``.

    Returns:
        A self-contained HTML fragment (inline styles, no script); its root carries ``data-bits="s eee mmm"``.

    Raises:
        ValueError: for an unknown format (the message lists them) or a tensor of more than one element.
        TypeError: if `x` is not a number or a tensor.
    """
    f = get_format(fmt)
    d = decode(x, f)
    return _layout(float(x.detach().reshape(-1)[0]) if isinstance(x, torch.Tensor) else float(x), d, f)


def parse_value(text: str) -> float | None:
    """The number typed in the explorer's box, or None: what ``NUMBER_PATTERN`` accepts (the page reads the same).

    Every nan is read as the positive quiet nan, as a browser stores one.
    """
    if not isinstance(text, str) or not re.fullmatch(NUMBER_PATTERN, text.strip(), re.IGNORECASE):
        return None
    value = float(text.strip())
    return math.nan if math.isnan(value) else value


def _choices(choice: str) -> list[str]:
    if choice != ALL and choice not in FORMATS:
        raise ValueError(f"choice must be {ALL!r} or a name of FORMATS {list(FORMATS)}, got {choice!r}")
    return list(FORMATS) if choice == ALL else [choice]


def explorer_result_html(text: str, choice: str = ALL) -> str:
    """The explorer's output for a typed text: the layouts of the chosen format(s), or what to type instead.

    Args:
        text: what the reader typed, e.g. "0.1", "1e-8", "-0", "inf".
        choice: "all" or a name of ``FORMATS``.

    Returns:
        HTML; the page's ``resultHtml`` builds the same string.

    Raises:
        ValueError: for an unknown choice.
    """
    names = _choices(choice)
    x = parse_value(text)
    if x is None:
        return (f"<p style='{STYLES['error']}'>could not read {html.escape(str(text))} as a number: "
                "try 0.1, 1e-8, -0, 65504, inf or nan</p>")
    return f"<p>x = {_r(x)}</p>" + "".join(_layout(x, decode(x, FORMATS[n]), FORMATS[n]) for n in names)


_JS = r"""
(function () {
  "use strict";
  // The same fields as lab_utils.formats.decode, the same HTML as lab_utils.widgets.formats; C is the page's config.
  function pow2(k) { var r = 1; while (k > 0) { r *= 2; k--; } while (k < 0) { r /= 2; k++; } return r; }
  function roundHalfEven(y) { var f = Math.floor(y), d = y - f; return d > 0.5 || (d === 0.5 && f % 2) ? f + 1 : f; }
  function pyRepr(v) {  // Python's repr of a float: the shortest digits that round-trip (as String), Python's layout
    if (v !== v) return "nan";
    if (v === Infinity) return "inf";
    if (v === -Infinity) return "-inf";
    if (v === 0) return 1 / v < 0 ? "-0.0" : "0.0";
    var s = String(Math.abs(v)), k = s.indexOf("e"), exp = 0;
    if (k >= 0) { exp = parseInt(s.slice(k + 1), 10); s = s.slice(0, k); }
    var parts = s.split("."), all = parts[0] + (parts[1] || ""), lead = all.search(/[1-9]/);
    var digits = all.slice(lead).replace(/0+$/, "");
    exp += parts[0].length - 1 - lead;
    var out;
    if (exp >= -4 && exp < 16) {
      if (exp < 0) out = "0." + "0".repeat(-exp - 1) + digits;
      else if (digits.length <= exp + 1) out = digits + "0".repeat(exp + 1 - digits.length) + ".0";
      else out = digits.slice(0, exp + 1) + "." + digits.slice(exp + 1);
    } else {
      var e = Math.abs(exp), es = (e < 10 ? "0" : "") + e;
      out = digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "") + "e" + (exp < 0 ? "-" : "+") + es;
    }
    return (v < 0 ? "-" : "") + out;
  }
  function f32Bits(x) {  // the fp32 nearest x (round to nearest even), as an unsigned 32-bit pattern
    if (x !== x) return 0x7FC00000;  // the quiet nan PyTorch stores for float("nan")
    var dv = new DataView(new ArrayBuffer(4));
    dv.setFloat32(0, x);
    return dv.getUint32(0);
  }
  function bf16Bits(b) {  // c10's round_to_nearest_even: the top 16 bits, rounded on the 16 dropped
    if ((b & 0x7F800000) === 0x7F800000 && (b & 0x7FFFFF)) return 0x7FC0;
    return Math.floor((b + 0x7FFF + (Math.floor(b / 65536) % 2)) / 65536);
  }
  function fp16Bits(b) {  // IEEE binary16 nearest the fp32 value with these bits
    var sign = b >>> 31 ? 0x8000 : 0, e = (b >>> 23) & 0xFF, m = b & 0x7FFFFF;
    if (e === 255) return sign | (m ? 0x7E00 : 0x7C00);
    var v = e ? (1 + m / 8388608) * pow2(e - 127) : m * pow2(-149);
    if (v < pow2(-14)) return sign | roundHalfEven(v * pow2(24));  // subnormal: a multiple of 2^-24
    var E = e - 127, q = roundHalfEven(m / 8192);  // 23 -> 10 fraction bits
    if (q === 1024) { E += 1; q = 0; }
    if (E + 15 >= 31) return sign | 0x7C00;  // overflow
    return sign | ((E + 15) << 10) | q;
  }
  function bin(n, width) { var s = n.toString(2); return "0".repeat(width - s.length) + s; }
  function layout(x, name, C) {  // lab_utils.formats.decode(x, name), field by field
    var F = C.formats[name], b = f32Bits(x), width = 1 + F.exponent_bits + F.mantissa_bits;
    var raw = name === "fp32" ? b : name === "bf16" ? bf16Bits(b) : fp16Bits(b);
    var sign = Math.floor(raw / pow2(width - 1));
    var eField = Math.floor(raw / pow2(F.mantissa_bits)) % pow2(F.exponent_bits);
    var mField = raw % pow2(F.mantissa_bits), fraction = mField / pow2(F.mantissa_bits), d;
    if (eField === pow2(F.exponent_bits) - 1) {
      d = {kind: mField ? "nan" : "inf", exponent: eField - F.bias, mantissa_value: fraction,
           value: mField ? NaN : (sign ? -Infinity : Infinity)};
    } else {
      d = eField === 0 ? {kind: mField ? "subnormal" : "zero", exponent: 1 - F.bias, mantissa_value: fraction}
                       : {kind: "normal", exponent: eField - F.bias, mantissa_value: 1 + fraction};
      d.value = (sign ? -1 : 1) * d.mantissa_value * pow2(d.exponent);
    }
    d.sign = sign;
    d.exponent_bits = bin(eField, F.exponent_bits);
    d.mantissa_bits = bin(mField, F.mantissa_bits);
    return d;
  }
  function layoutHtml(x, name, C) {
    var F = C.formats[name], S = C.styles, d = layout(x, name, C), s = String(d.sign), eb = d.exponent_bits;
    var mb = d.mantissa_bits, titles = {s: "sign", e: "exponent", m: "mantissa"}, boxes = "", fields, value, note;
    [["s", s], ["e", eb], ["m", mb]].forEach(function (p) {
      for (var i = 0; i < p[1].length; i++) {
        boxes += "<span class='lab-bit-" + p[0] + "' title='" + titles[p[0]] + "' style='" + S[p[0]] + "'>" +
                 p[1][i] + "</span>";
      }
    });
    if (d.kind === "normal" || d.kind === "subnormal" || d.kind === "zero") {
      fields = d.kind === "normal"
        ? "exponent " + eb + " = " + parseInt(eb, 2) + " - " + F.bias + " = " + d.exponent + "; mantissa 1." + mb +
          " = " + pyRepr(d.mantissa_value)
        : "exponent " + eb + ": subnormal, 1 - " + F.bias + " = " + d.exponent + "; mantissa 0." + mb + " = " +
          pyRepr(d.mantissa_value) + " (no implicit 1)";
      value = "(-1)<sup>" + s + "</sup> &times; " + pyRepr(d.mantissa_value) + " &times; 2<sup>" + d.exponent +
              "</sup> = " + pyRepr(d.value);
    } else if (d.kind === "inf") {
      fields = "exponent all ones, mantissa all zeros: infinity"; value = pyRepr(d.value);
    } else {
      fields = "exponent all ones, mantissa not all zeros: not a number"; value = pyRepr(d.value);
    }
    if (x !== x || d.kind === "nan") note = "";
    else if (d.kind === "inf" && isFinite(x)) note = "; overflow: |x| &gt; max " + pyRepr(F.max);
    else if (d.value === 0 && x !== 0) note = "; underflow: x became zero";
    else if (isFinite(x) && isFinite(d.value)) note = "; stored - x = " + pyRepr(d.value - x);
    else note = "";
    return "<div class='lab-bit-layout' data-format='" + name + "' data-bits='" + s + " " + eb + " " + mb +
           "' style='" + S.layout + "'><div><b>" + name + "</b> <small>1 sign, " + F.exponent_bits + " exponent, " +
           F.mantissa_bits + " mantissa bits; bias " + F.bias + "</small></div><div style='" + S.boxes + "'>" +
           boxes + "</div><div>" + fields + "</div><div>" + value + " <i>(" + d.kind + ")</i>" + note + "</div></div>";
  }
  function parseValue(text, C) {  // lab_utils.widgets.formats.parse_value
    var t = String(text).trim();
    if (!new RegExp("^(?:" + C.pattern + ")$", "i").test(t)) return null;
    var low = t.toLowerCase().replace(/^\+/, "");
    if (/nan$/.test(low)) return NaN;
    if (/inf(inity)?$/.test(low)) return low[0] === "-" ? -Infinity : Infinity;
    return Number(t);
  }
  function escapeHtml(s) {  // Python's html.escape
    return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")
            .replace(/'/g, "&#x27;");
  }
  function resultHtml(text, choice, C) {
    var x = parseValue(text, C);
    if (x === null) {
      return "<p style='" + C.styles.error + "'>could not read " + escapeHtml(String(text)) +
             " as a number: try 0.1, 1e-8, -0, 65504, inf or nan</p>";
    }
    var names = choice === C.all ? C.order : [choice];
    return "<p>x = " + pyRepr(x) + "</p>" + names.map(function (n) { return layoutHtml(x, n, C); }).join("");
  }
  function init(root) {
    var C = JSON.parse(root.getAttribute("data-config"));
    var input = root.querySelector("[name='x']"), choice = root.querySelector("[name='format']");
    var out = root.querySelector(".lab-formats-result");
    function update() { out.innerHTML = resultHtml(input.value, choice.value, C); }
    input.addEventListener("input", update);
    choice.addEventListener("change", update);
    update();
  }
  if (typeof document !== "undefined") {
    document.querySelectorAll(".lab-format-explorer:not([data-ready])").forEach(function (root) {
      root.setAttribute("data-ready", "1");
      init(root);
    });
  }
  if (typeof module === "object" && module.exports) {
    module.exports = {layout: layout, layoutHtml: layoutHtml, parseValue: parseValue, pyRepr: pyRepr,
                      resultHtml: resultHtml};
  }
})();
"""


def explorer_config() -> dict:
    """The constants the page's script uses, from ``lab_utils.formats.FORMATS`` (so both views share them)."""
    return {"formats": {n: {"exponent_bits": f.exponent_bits, "mantissa_bits": f.mantissa_bits, "bias": f.bias,
                            "max": f.max} for n, f in FORMATS.items()},
            "order": list(FORMATS), "all": ALL, "pattern": NUMBER_PATTERN, "styles": STYLES}


def _format_options() -> list[tuple[str, str]]:
    return [("all three", ALL)] + [(n, n) for n in FORMATS]


def _check_value(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a number, e.g. 0.1 or float('inf'), got {type(value).__name__}")
    return float(value)


def explorer_html(value: float = 0.1, choice: str = ALL) -> str:
    """The explorer as self-contained HTML + JS (no kernel, no network): what the book's page shows.

    Args:
        value: the number the text box starts with.
        choice: the format shown first, "all" or a name of ``FORMATS``.

    Returns:
        An HTML fragment: a form, a result the script fills in, and the script.

    Raises:
        TypeError: `value` is not a number. ValueError: unknown `choice`.
    """
    value = _check_value(value)
    _choices(choice)
    data = html.escape(json.dumps(explorer_config()), quote=True)
    options = "".join(f"<option value='{v}'{' selected' if v == choice else ''}>{t}</option>"
                      for t, v in _format_options())
    label = "style='margin-right:1em;white-space:nowrap'"
    return (f"<div class='lab-format-explorer' {STATIC_VIEW_ATTR}='format-explorer' data-config=\"{data}\">"
            f"<form onsubmit='return false'><label {label}>x <input name='x' type='text' style='width:12em' "
            f"value='{html.escape(_r(value))}'></label><label {label}>format <select name='format'>{options}"
            "</select></label></form><div class='lab-formats-result'><p><i>The explorer needs JavaScript.</i></p>"
            "</div></div><script>" + _JS + "</script>")


class FormatExplorer(DualView):
    """The explorer as one output with two views (:class:`~lab_utils.widgets.static.DualView`): ipywidgets (live)
    and :func:`explorer_html` (the book's page).

    Args:
        value: the number to start with.
    """

    plain = "Floating-point format explorer (interactive with a kernel, or on the book's page)"

    def __init__(self, value: float = 0.1) -> None:
        value = _check_value(value)
        self.html = explorer_html(value)
        self.text = w.Text(value=_r(value), description="x")
        self.format = w.Dropdown(options=_format_options(), value=ALL, description="format")
        self.result = w.HTML()
        for control in (self.text, self.format):
            control.observe(lambda _: self.update(), names="value")
        self.widget = w.VBox([w.HBox([self.text, self.format]), self.result])
        self.update()

    def update(self) -> None:
        """Redraw the layouts from the controls (called on every change)."""
        self.result.value = explorer_result_html(self.text.value, self.format.value)



def format_explorer(value: float = 0.1) -> None:
    """Display the bit-layout explorer: a number's sign, exponent and mantissa in fp32, fp16 and bf16.

    With a kernel the controls are ipywidgets and ``lab_utils.formats.decode`` reads the bits; on the book's page,
    without a kernel, the same output shows a self-contained HTML/JS explorer that computes the same bits.

    Args:
        value: the number to start with, e.g. 0.1 (not exact in any binary format) or 65504 (fp16's max).

    Raises:
        TypeError: `value` is not a number.
    """
    display(FormatExplorer(value))
