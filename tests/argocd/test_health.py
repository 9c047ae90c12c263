"""The Argo CD health check of ReferralSystem, run the way Argo CD runs scripts
from argocd-cm: Lua 5.1 (Debian's lua5.1; Argo uses gopher-lua, also 5.1) with only
base, table, package and a safe os, and no string library.

UPDATE_GENERATED=1 rewrites deploy/argocd/argocd-cm-patch.yaml and the snippet in
docs/argocd.md from health.lua.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHECK_DIR = REPO / "deploy" / "argocd" / "resource_customizations" / "referral.dev" / "ReferralSystem"
HEALTH_LUA = CHECK_DIR / "health.lua"
RUNNER = pathlib.Path(__file__).resolve().parent / "run_health.lua"
PATCH = REPO / "deploy" / "argocd" / "argocd-cm-patch.yaml"
DOC = REPO / "docs" / "argocd.md"
KEY = "resource.customizations.health.referral.dev_ReferralSystem"


def need(condition: bool, what: str, install: str) -> None:
    if condition:
        return
    if os.environ.get("REFOP_ALLOW_MISSING_TOOLS") == "1":
        print(f"SKIPPED: {what} is missing (REFOP_ALLOW_MISSING_TOOLS=1)")
        pytest.skip(f"SKIPPED: {what} is missing")
    pytest.fail(f"{what} is missing: {install}, or set REFOP_ALLOW_MISSING_TOOLS=1 to skip", pytrace=False)


@pytest.fixture(scope="session")
def lua():
    path = shutil.which("lua5.1")
    need(path is not None, "lua5.1", "apt-get install lua5.1 lua-yaml")
    probe = subprocess.run([path, "-e", "require('lyaml')"], capture_output=True, text=True)
    need(probe.returncode == 0, "the lyaml module for lua5.1", "apt-get install lua-yaml")
    return path


def run(lua: str, script: pathlib.Path, obj: pathlib.Path) -> tuple[int, str, str]:
    out = subprocess.run([lua, str(RUNNER), str(script), str(obj)], capture_output=True, text=True, timeout=30)
    first, _, rest = out.stdout.rstrip("\n").partition("\t")
    return out.returncode, first, rest + out.stderr


def cases() -> list[dict]:
    return yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", cases(), ids=lambda c: pathlib.Path(c["inputPath"]).stem)
def test_health_of_each_fixture(lua, case):
    code, status, message = run(lua, HEALTH_LUA, CHECK_DIR / case["inputPath"])
    assert code == 0, f"the script failed: {status} {message}"
    assert (status, message) == (case["healthStatus"]["status"], case["healthStatus"]["message"])


def test_every_fixture_is_tested_and_every_status_is_covered():
    referenced = {pathlib.Path(c["inputPath"]).name for c in cases()}
    present = {p.name for p in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert referenced == present, f"untested: {present - referenced}, missing: {referenced - present}"
    statuses = {c["healthStatus"]["status"] for c in cases()}
    assert {"Healthy", "Progressing", "Degraded", "Suspended"} <= statuses


SANDBOX_PROBES = {
    "string library call": ('local hs = {status = "Healthy", message = string.upper("x")} return hs', False),
    "method on a string": ('local m = obj.kind:lower() return {status = "Healthy", message = m}', False),
    "find on a message": ('local i = ("abc"):find("b") return {status = "Healthy", message = "x"}', False),
    "io library": ('io.open("/etc/passwd") return {status = "Healthy", message = ""}', False),
    "os.execute": ('os.execute("true") return {status = "Healthy", message = ""}', False),
    "require of another module": ('require("string") return {status = "Healthy", message = ""}', False),
    "Lua 5.2 goto": ('goto done ::done:: return {status = "Healthy", message = ""}', False),
    "Lua 5.3 integer division": ('return {status = "Healthy", message = tostring(7 // 2)}', False),
    "what Argo allows": (
        'local t = {} table.insert(t, "a") local o = require("os") '
        'local now = os.time() + o.time() '
        'return {status = "Healthy", message = table.concat(t, ",") .. " " .. obj.kind .. " " .. #obj.kind}',
        True,
    ),
}


@pytest.mark.parametrize("probe", sorted(SANDBOX_PROBES))
def test_the_sandbox_is_argos(lua, tmp_path, probe):
    source, allowed = SANDBOX_PROBES[probe]
    script = tmp_path / "probe.lua"
    script.write_text(source)
    code, status, message = run(lua, script, CHECK_DIR / "testdata" / "healthy.yaml")
    if allowed:
        assert (code, status, message) == (0, "Healthy", "a ReferralSystem 14"), message
    else:
        assert code != 0 and status == "error", f"the sandbox let `{probe}` through: {status} {message}"


def lua_code_only(source: str) -> str:
    """The script without comments and string literals."""
    source = re.sub(r"--\[(=*)\[.*?\]\1\]", " ", source, flags=re.S)
    source = re.sub(r"--[^\n]*", " ", source)
    return re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'', '""', source)


def test_no_path_of_the_script_needs_the_string_library():
    # The fixtures run some paths; this covers the ones they do not.
    code = lua_code_only(HEALTH_LUA.read_text())
    assert not re.search(r"\bstring\b", code), "health.lua uses the string library"
    assert not re.search(r"\w\s*:\s*\w+\s*[\(\"'{]", code), "health.lua calls a method (strings have none)"
    for name in ("load", "loadstring", "dofile", "loadfile", "setfenv", "getfenv", "debug", "io", "math", "coroutine"):
        assert not re.search(rf"\b{name}\b", code), f"health.lua uses {name}, which Argo CD does not open"


def test_the_reasons_the_script_knows_are_the_operators():
    code = HEALTH_LUA.read_text()
    block = re.search(r"local needsAction = \{(.*?)\}", code, re.S).group(1)
    reasons = re.findall(r"(\w+) = true", block)
    assert reasons
    sources = "".join(p.read_text() for p in (REPO / "src").rglob("*.rs"))
    for reason in [*reasons, "Stopped", "Ready"]:
        assert f'"{reason}"' in sources, f"no condition reason {reason!r} in src/: the health check is stale"
    status_rs = (REPO / "src" / "crd" / "status.rs").read_text()
    for kind in re.findall(r'"(IndexesReady|ChainIntegrity|BackupHealthy)"', code):
        assert kind in status_rs


def doc_block(text: str) -> tuple[int, int]:
    begin = text.index("<!-- health.lua begin")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- health.lua end -->")
    return begin, end


def expected_patch() -> tuple[str, str]:
    header, _, _ = PATCH.read_text().partition("apiVersion:")
    indented = "".join(("    " + line if line.strip() else "") + "\n" for line in HEALTH_LUA.read_text().splitlines())
    body = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n  namespace: argocd\n"
        f"data:\n  {KEY}: |\n{indented}"
    )
    return header, body


def test_the_argocd_cm_snippets_equal_health_lua():
    header, body = expected_patch()
    text = DOC.read_text()
    begin, end = doc_block(text)
    if os.environ.get("UPDATE_GENERATED") == "1":
        PATCH.write_text(header + body)
        DOC.write_text(text[:begin] + "```yaml\n" + body + "```\n" + text[end:])
        text = DOC.read_text()
        begin, end = doc_block(text)
    lua = HEALTH_LUA.read_text()
    assert yaml.safe_load(PATCH.read_text())["data"][KEY] == lua, (
        "deploy/argocd/argocd-cm-patch.yaml is stale: UPDATE_GENERATED=1 python3 -m pytest tests/argocd"
    )
    snippet = text[begin:end].strip()
    assert snippet.startswith("```yaml\n") and snippet.endswith("```")
    assert yaml.safe_load(snippet[len("```yaml\n"):-3])["data"][KEY] == lua, (
        "the argocd-cm snippet in docs/argocd.md is stale: UPDATE_GENERATED=1 python3 -m pytest tests/argocd"
    )
