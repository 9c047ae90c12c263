"""What can be read off the Dockerfile: a multi-stage build of the one binary for a
static musl target, a distroless/static final stage by default, and a non-root user
that is the one the chart's pod security context expects. (scripts/build-images.sh
builds this same file with buildah for the test bed, with BINARY_FROM=prebuilt and
a locally made BASE_IMAGE; the e2e suite runs that image on the test bed's node.)"""

from __future__ import annotations

import re

from render import REPO, render_objects

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def arg_defaults() -> dict[str, str]:
    """The global ARGs (before the first FROM) and their defaults."""
    defaults = {}
    for keyword, rest in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def resolve(text: str) -> str:
    for name, value in arg_defaults().items():
        text = text.replace("${" + name + "}", value)
    return text


def test_multi_stage_static_build_on_distroless():
    froms = [resolve(rest) for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "the build stage must not ship"
    assert " AS build" in froms[0]
    final = froms[-1]
    assert final.startswith(("gcr.io/distroless/static", "scratch")), final
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "unknown-linux-musl" in runs and "--bin referral-operator" in runs and "--locked" in runs
    # By default the final stage copies the binary the build stage compiled.
    assert "build AS binary" in froms, froms
    assert "COPY --from=binary" in DOCKERFILE


def test_the_image_user_is_the_charts():
    users = [rest for keyword, rest in instructions() if keyword == "USER"]
    assert users == ["65532:65532"], users
    pod = next(o for o in render_objects({}) if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (65532, 65532)
    entrypoint = [rest for keyword, rest in instructions() if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["/referral-operator"]'], entrypoint
    assert pod["containers"][0]["args"][0] == "run", "the chart passes the subcommand"


def test_the_builder_uses_the_crates_rust_version():
    cargo = (REPO / "Cargo.toml").read_text()
    rust_version = re.search(r'^rust-version = "([^"]+)"', cargo, re.M).group(1)
    arg = re.search(r"^ARG RUST_VERSION=(\S+)$", DOCKERFILE, re.M).group(1)
    assert arg == rust_version, f"Dockerfile builds with Rust {arg}, Cargo.toml needs {rust_version}"


def test_the_build_context_leaves_out_what_the_build_does_not_need():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert "target/" in ignored and ".git/" in ignored
    copied = [rest.split()[0] for keyword, rest in instructions() if keyword == "COPY" and "--from" not in rest]
    for source in copied:
        assert f"{source.rstrip('/')}/" not in ignored, f"{source} is copied but ignored"
