"""What the commands print about a model and a scene plan (`info`, `infer --verbose`) and about
a scene that ran (`infer`, `fill`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from copgen_rt import specs
from copgen_rt.scenes.job import SceneJob
from copgen_rt.scenes.run import SceneResult

if TYPE_CHECKING:
    from copgen_rt.plan import RuntimePlan


def describe_spec(spec: specs.ModelSpec) -> str:
    """The spec's size and its modality table (bands or classes, GSD, pixels, latent, tokens)."""
    d = spec.denoiser
    lines = [f"{spec.name} ({spec.family}): embed {d.embed_dim}, depth {d.depth}, {d.num_heads} heads, "
             f"{spec.num_tokens} tokens",
             f"{'#':>2}  {'modality':<30} {'bands / classes':<28} {'GSD':>5} {'pixels':<12} "
             f"{'latent':<10} {'tokens':>6}"]
    for i, m in enumerate(spec.modalities):
        p = m.processing
        content = ",".join(m.bands) if m.bands else (
            f"{len(p.codes)} classes" if isinstance(p, specs.Classes) else p.units)
        gsd = f"{m.gsd:g}m" if m.gsd else "-"
        pix = "x".join(map(str, spec.pixel_shape(m.name)))
        lat = "x".join(map(str, m.latent_shape))
        lines.append(f"{i:>2}  {m.name:<30} {content:<28} {gsd:>5} {pix:<12} {lat:<10} {m.num_tokens:>6}")
    return "\n".join(lines)


def describe_plan(job: SceneJob, plan: RuntimePlan | None = None) -> str:
    """The model a scene job is planned for, then the job's plan; with the RuntimePlan, the whole
    process's estimated memory (`copgen_rt.memory`) as the plan's last line."""
    model = f"model: {job.spec.name}"
    if job.spec.name == "copgen-demo":
        model += " (the bundled random demo model: infer's default without --weights)"
    text = f"{model}\n{job.describe()}"
    if plan is None:
        return text
    from copgen_rt import memory

    used = [*job.generate, *job.conditions]
    vaes = sorted({m.vae for m in job.spec.modalities if m.name in used and m.vae is not None})
    estimate = memory.estimate(job.spec, plan.dtype, plan.engines.denoiser, job.options.batch_size,
                               device=plan.device, blending=job.blend_bytes, vae_keys=vaes)
    return f"{text}\nmemory: the whole process, estimated: {estimate.describe()}"


def describe_result(result: SceneResult) -> str:
    """`infer`'s line after a scene ran, before its outputs."""
    return f"{result.tiles} tiles in {result.seconds:.1f} s{_notes(result)}; wrote:"


def describe_fill_result(job: SceneJob, result: SceneResult) -> list[str]:
    """`fill`'s lines after a scene ran: the share of each output generated, and a note when no
    pixel or every pixel was a gap."""
    shares = result.generated_pixels.items()
    generated = ", ".join(f"{n} {100 * k / job.pixel_count(n):.2f}%" for n, k in shares)
    gapped = result.tiles - result.copied - result.skipped
    lines = [f"{result.tiles} tiles in {result.seconds:.1f} s ({gapped} with gaps, generated; "
             f"{result.copied} without, copied{_notes(result)}); generated pixels: {generated}; wrote:"]
    if not any(result.generated_pixels.values()):
        lines.append("note: no pixel of the scene is a gap: the outputs are the input")
    elif all(k == job.pixel_count(n) for n, k in shares):
        lines.append("note: every pixel of the scene is a gap: generated from the other inputs alone")
    return lines


def _notes(result: SceneResult) -> str:
    note = f", {result.skipped} without data" if result.skipped else ""
    return note + (f", {result.resumed} resumed" if result.resumed else "")
