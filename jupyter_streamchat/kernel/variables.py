"""A kernel's variables as a chat can attach them: their names, and a short, bounded summary of
one (a DataFrame as its type, shape, dtypes and first rows; anything else as its type, size and
a cut repr).

The summary is computed in the kernel, where the values live, and only the summary leaves it.
Two callers:

- the notebook widget's comm (jupyter_streamchat/widget/comm.py), in a kernel that has this
  package, imports this module;
- JupyterLab's chat panel (js/src/lab/contextsources.ts) talks to kernels that may not have
  this package installed. Its bundle carries this file's text (esbuild imports it as text when
  the front end is built) and evaluates it, in a namespace of its own, as a ``user_expressions``
  entry of a silent execute request, calling :func:`answer`; the answer comes back through
  ``_repr_json_`` as the expression's ``application/json`` value.

So this file must stay self-contained: the standard library only, Python 3.8 syntax, and
nothing left behind in the user's namespace. Pandas and NumPy are looked up in ``sys.modules``,
never imported: a kernel that holds a DataFrame has imported pandas already.

Everything a value's own code does (``__repr__``, ``__len__``, ``to_string``) may raise, be
slow or return a huge text: each call is guarded, cut to size, and on the kernel's main thread
given at most :data:`TIME_LIMIT` seconds (a SIGALRM timer, unless the user has one running).
"""

from __future__ import annotations

import contextlib
import json
import reprlib
import signal
import sys
import threading
import types

# The longest summary, in characters; longer ones end with CUT.
MAX_CHARS = 8 * 1024
CUT = "[cut]"
# How many variables one listing names at most.
MAX_LISTED = 100
# How many columns of a DataFrame have their dtype listed; rows of its head shown.
MAX_COLUMNS = 50
HEAD_ROWS = 5
# Seconds a value's own code may take for one summary, where a timer can bound it.
TIME_LIMIT = 2.0

# Names a user did not make: IPython's own, and the like.
_HIDDEN = frozenset({"In", "Out", "exit", "quit", "get_ipython"})


class _TooSlow(BaseException):
    """Raised by the timer in the middle of a value's own code (BaseException, so that code's
    ``except Exception`` does not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds`` (raises _TooSlow), where that can be done without
    touching anything of the user's: on the main thread, with SIGALRM, and no timer of theirs
    running. Elsewhere, no limit."""
    can = (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not can:
        yield
        return

    def on_alarm(signum, frame):
        raise _TooSlow()

    try:
        previous = signal.signal(signal.SIGALRM, on_alarm)
    except (ValueError, OSError):
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(CUT) - 1)] + "\n" + CUT


def _guarded(call, fallback: str, limit: int = MAX_CHARS) -> str:
    """``call()``'s text, cut to ``limit``; ``fallback`` and the reason if it raised or took
    too long."""
    try:
        with _time_limit(TIME_LIMIT):
            text = call()
        if not isinstance(text, str):
            text = str(type(text).__name__)
        return _cut(text, limit)
    except _TooSlow:
        return f"{fallback} (it took longer than {TIME_LIMIT:g} s)"
    except Exception as e:  # the value's own code failed: say so, not why in detail
        return f"{fallback} ({type(e).__name__})"


def _type_name(value) -> str:
    """``int``, ``pandas.DataFrame``, ``numpy.ndarray``, ``mymodule.Thing``."""
    kind = type(value)
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", None) or getattr(kind, "__name__", "object")
    if module in ("builtins", "__main__", ""):
        return name
    return f"{module.split('.')[0]}.{name}"


def _is(value, package: str, name: str) -> bool:
    """Whether ``value`` is an instance of ``package``'s class ``name`` (or of a subclass),
    without importing ``package``."""
    if package not in sys.modules:
        return False
    for cls in type(value).__mro__:
        module = getattr(cls, "__module__", "") or ""
        if cls.__name__ == name and (module == package or module.startswith(package + ".")):
            return True
    return False


def _shape(value) -> str:
    """A shape as Python writes a tuple: ``(3, 2)``, ``(5,)``."""
    try:
        return str(tuple(int(n) for n in value.shape))
    except Exception:
        return "(?)"


def _length(value):
    try:
        with _time_limit(TIME_LIMIT):
            n = len(value)
        return n if isinstance(n, int) else None
    except (Exception, _TooSlow):
        return None


_CONTAINERS = (list, tuple, set, frozenset, dict, str, bytes, bytearray, range)


def brief(value) -> str:
    """A few words on ``value`` for a list of variables, without running its own code (no
    repr): its type, and the shape or length of the kinds that have one."""
    name = _type_name(value)
    if _is(value, "pandas", "DataFrame") or _is(value, "pandas", "Series"):
        return f"{name} {_shape(value)}"
    if _is(value, "numpy", "ndarray"):
        return f"{name} {_shape(value)} {getattr(value, 'dtype', '')}".rstrip()
    if isinstance(value, _CONTAINERS):
        n = _length(value)
        unit = (
            "characters"
            if isinstance(value, str)
            else "bytes"
            if isinstance(value, (bytes, bytearray))
            else "items"
        )
        return f"{name}, {n} {unit}" if n is not None else name
    if isinstance(value, (bool, int, float, complex)) or value is None:
        return f"{name} {_guarded(lambda: repr(value), '?', 40)}"
    return name


def _offered(name: str, value) -> bool:
    """Whether a name in the user's namespace is a variable of theirs to offer: not private,
    not IPython's, not a module, class or function."""
    if not isinstance(name, str) or name.startswith("_") or name in _HIDDEN:
        return False
    return not isinstance(
        value,
        (
            types.ModuleType,
            type,
            types.FunctionType,
            types.BuiltinFunctionType,
            types.MethodType,
        ),
    )


def list_variables(namespace: dict, query: str = "", limit: int = MAX_LISTED) -> list:
    """``[{"name", "type", "brief"}]``: the user's variables whose name contains ``query``
    (any case), names that start with it first, then by name; at most ``limit``."""
    query = (query or "").lower()
    found = []
    for name, value in list(namespace.items()):
        if not _offered(name, value) or query not in name.lower():
            continue
        found.append((not name.lower().startswith(query), name.lower(), name, value))
    found.sort(key=lambda entry: entry[:2])
    return [
        {"name": name, "type": _type_name(value), "brief": brief(value)}
        for _, _, name, value in found[: max(0, limit)]
    ]


def _frame_summary(value) -> str:
    lines = [f"{_type_name(value)}, shape {_shape(value)}"]
    try:
        dtypes = list(value.dtypes.items())
        lines.append("dtypes:")
        for column, dtype in dtypes[:MAX_COLUMNS]:
            lines.append(f"  {_guarded(lambda: str(column), '?', 80)}: {dtype}")
        if len(dtypes) > MAX_COLUMNS:
            lines.append(f"  ... and {len(dtypes) - MAX_COLUMNS} more columns")
    except Exception as e:
        lines.append(f"dtypes: unknown ({type(e).__name__})")
    head = _guarded(
        lambda: value.head(HEAD_ROWS).to_string(max_cols=20, max_colwidth=40),
        "(the rows cannot be shown)",
    )
    lines.append(f"first {HEAD_ROWS} rows:")
    lines.append(head)
    return "\n".join(lines)


def _series_summary(value) -> str:
    lines = [
        f"{_type_name(value)}, shape {_shape(value)}, dtype {getattr(value, 'dtype', '?')}",
    ]
    head = _guarded(
        lambda: value.head(HEAD_ROWS * 2).to_string(max_rows=HEAD_ROWS * 2),
        "(the values cannot be shown)",
    )
    lines.append(f"first {HEAD_ROWS * 2} values:")
    lines.append(head)
    return "\n".join(lines)


def _array_summary(value) -> str:
    numpy = sys.modules["numpy"]
    lines = [f"{_type_name(value)}, shape {_shape(value)}, dtype {getattr(value, 'dtype', '?')}"]
    lines.append(
        _guarded(
            lambda: numpy.array2string(value, threshold=100, edgeitems=3, max_line_width=100),
            "(the values cannot be shown)",
        )
    )
    return "\n".join(lines)


def _repr_limits() -> reprlib.Repr:
    limits = reprlib.Repr()
    limits.maxlevel = 3
    limits.maxlist = limits.maxtuple = limits.maxset = limits.maxfrozenset = 30
    limits.maxdict = 30
    limits.maxstring = 2000
    limits.maxother = 2000
    limits.maxlong = 200
    return limits


def summarize(value, max_chars: int = MAX_CHARS) -> str:
    """The summary of ``value``, at most ``max_chars`` characters."""
    if _is(value, "pandas", "DataFrame"):
        text = _frame_summary(value)
    elif _is(value, "pandas", "Series"):
        text = _series_summary(value)
    elif _is(value, "numpy", "ndarray"):
        text = _array_summary(value)
    elif isinstance(value, str):
        text = f"str, {len(value)} characters:\n{value}"
    elif isinstance(value, _CONTAINERS):
        text = f"{brief(value)}:\n" + _guarded(
            lambda: _repr_limits().repr(value), "(its repr failed)", max_chars
        )
    else:
        text = f"{_type_name(value)}:\n" + _guarded(
            lambda: repr(value), "(its repr failed)", max_chars
        )
    return _cut(text, max_chars)


def describe(namespace: dict, name: str, max_chars: int = MAX_CHARS):
    """The context item of the variable ``name`` (``{"kind": "variable", "label", "text"}``),
    or None when the namespace has no such variable."""
    if not isinstance(name, str) or name not in namespace:
        return None
    return {"kind": "variable", "label": name, "text": summarize(namespace[name], max_chars)}


class _JSON:
    """An answer shown to the front end as JSON (IPython's ``application/json`` format)."""

    def __init__(self, data):
        self.data = data

    def _repr_json_(self):
        return self.data


def _user_namespace() -> dict:
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            return shell.user_ns
    except ImportError:
        pass
    return vars(sys.modules["__main__"])


def respond(asked, namespace: dict) -> dict:
    """The answer to one request: ``{"op": "list", "query": ...}`` gets ``{"variables":
    [...]}``, ``{"op": "describe", "name": ...}`` gets ``{"item": {...} | None}``; anything else
    ``{"error": "..."}``."""
    try:
        op = asked.get("op") if isinstance(asked, dict) else None
        if op == "list":
            return {"variables": list_variables(namespace, str(asked.get("query") or "")[:200])}
        if op == "describe":
            return {"item": describe(namespace, asked.get("name"))}
        return {"error": f"unknown request {str(op)[:40]!r}"}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def answer(request: str) -> _JSON:
    """JupyterLab's entry point: ``request`` is the JSON text of a request to :func:`respond`,
    about the user's namespace; the answer goes back as JSON."""
    try:
        asked = json.loads(request)
    except ValueError as e:
        return _JSON({"error": f"not JSON: {e}"})
    return _JSON(respond(asked, _user_namespace()))
