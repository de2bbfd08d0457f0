"""Spec → image: check the build plan, make sure the base exists, assemble the context on the host
(llm.env.context), build the `os` stage, install the lock and the sources on it (llm.env.deps_image), then
`docker build --network none` of the rest.

For a spec with CANN the build runs twice over the same cached layers: first up to the `cann`
stage, whose environment is read by sourcing the spec's set_env.sh scripts, then whole, with
those exports baked into ENV (`docker exec` and testinfra do not read .bashrc).
"""

from __future__ import annotations

from llm.env.base import resolve_base
from llm.env.context import DEPS, BuildContext, assemble, build_folder, fetch_wheels, render_dockerfile
from llm.env.deps_image import deps_image
from llm.env.engine import Echo, _stderr_echo, docker
from llm.env.labels import labels
from llm.env.plan import BuildInputs, BuildPlan, make_plan  # noqa: F401  (BuildInputs: the public input type)
from llm.env.site import Site
from llm.env.spec import LoadedSpec


def _build_args(ctx: BuildContext, tag: str | None, target: str | None = None) -> list[str]:
    # --force-rm: a failed step leaves no exited container behind (the legacy builder keeps it by default)
    args = ["build", "--force-rm", "--network", "none", "--file", str(ctx.path / "Dockerfile")]
    if tag:
        args += ["--tag", tag]
    if target:
        args += ["--target", target]
    for key, value in ctx.build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    return args


def capture_cann_env(image: str, set_env: list[str], echo: Echo | None = _stderr_echo) -> dict[str, str]:
    """What the spec's set_env.sh scripts export, read by sourcing them in the CANN stage."""
    sourced = "; ".join(f". {path} >/dev/null 2>&1" for path in set_env)
    before = docker(
        ["run", "--rm", "--network", "none", "--entrypoint", "env", image, "-0"],
        echo=echo,
        capture=True,
        what="reading the CANN stage's environment",
    ).stdout
    after = docker(
        ["run", "--rm", "--network", "none", "--entrypoint", "bash", image, "-c", f"{sourced}; env -0"],
        echo=echo,
        capture=True,
        what="sourcing CANN's set_env.sh",
    ).stdout

    def parse(blob: str) -> dict[str, str]:
        return dict(item.split("=", 1) for item in blob.split("\0") if "=" in item)

    old, new = parse(before), parse(after)
    return {k: v for k, v in new.items() if old.get(k) != v and k not in ("SHLVL", "_", "PWD", "OLDPWD")}


def run_plan(plan: BuildPlan, *, echo: Echo | None = _stderr_echo, tag: str | None = None) -> str:
    """Build the image a checked plan describes; returns its tag."""
    plan.require()
    loaded = plan.loaded
    tag = tag or loaded.tag
    base_ref = resolve_base(loaded, echo=echo)
    files = fetch_wheels(loaded, plan, echo=echo)
    with build_folder(loaded) as folder:
        return _build(plan, tag, base_ref, assemble(plan, base_ref, files, folder, echo=echo), echo)


def _build(plan: BuildPlan, tag: str, base_ref: str, ctx: BuildContext, echo: Echo | None) -> str:
    loaded = plan.loaded
    hint = f"fix the step shown above and re-run `invoke build-image {loaded.env_args}` (finished steps are cached)"
    if loaded.spec.cann:
        stage = f"npubox-stage/{loaded.name}-cann:{loaded.content_hash[:12]}"
        docker(
            [*_build_args(ctx, stage, target="cann"), str(ctx.path)],
            echo=echo,
            what=f"building the CANN stage of {tag}",
            hint=hint,
        )
        cann_env = capture_cann_env(stage, loaded.spec.cann.set_env, echo=echo)
        (ctx.path / "Dockerfile").write_text(render_dockerfile(loaded, cann_env))
    iidfile = ctx.path / DEPS / "os.iid"  # deps/ is not sent to the daemon
    docker(
        [*_build_args(ctx, None, target="os"), "--iidfile", str(iidfile), str(ctx.path)],
        echo=echo,
        what=f"building the os stage of {tag}",
        hint=hint,
    )
    os_id = iidfile.read_text().strip()
    iidfile.unlink()
    repo = f"npubox-stage/{loaded.name}-deps"
    installed = deps_image(repo, os_id, ctx.path / DEPS, echo=echo, what=tag, hint=hint)
    ctx.build_args["DEPS_IMAGE"] = installed
    args = _build_args(ctx, tag)
    image_labels = labels(loaded, base_ref)
    if ctx.unverified_sources:
        image_labels["npubox.sources.unverified"] = ",".join(ctx.unverified_sources)
    for key, value in image_labels.items():
        args += ["--label", f"{key}={value}"]
    docker([*args, str(ctx.path)], echo=echo, what=f"building {tag}", hint=hint)
    if loaded.spec.cann:
        docker(["rmi", stage], echo=echo, check=False, capture=True)  # only the name: its layers are the image's
    return tag


def build_image(
    loaded: LoadedSpec,
    site: Site,
    *,
    echo: Echo | None = _stderr_echo,
    tag: str | None = None,
    inputs: BuildInputs = BuildInputs(),
) -> str:
    """Plan and build ``loaded``'s image."""
    return run_plan(make_plan(loaded, site, inputs), echo=echo, tag=tag)
