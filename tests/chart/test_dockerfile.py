"""What can be checked of the Dockerfile without a container engine (none runs
here, so the image is never built by these tests): a multi-stage build of the one
binary for a static musl target, a distroless/static final stage, and a non-root
user that is the one the chart's pod security context expects."""

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


def test_multi_stage_static_build_on_distroless():
    froms = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert len(froms) >= 2, "the build stage must not ship"
    assert " AS build" in froms[0]
    final = froms[-1]
    assert final.startswith(("gcr.io/distroless/static", "scratch")), final
    runs = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    assert "unknown-linux-musl" in runs and "--bin referral-operator" in runs and "--locked" in runs
    assert "COPY --from=build" in DOCKERFILE


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
