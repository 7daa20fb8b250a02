"""How AUTOMATIC1111's stable-diffusion-webui writes and reads the PNG-info text
(``parameters``), for the tests to check ours with.

Origin: https://github.com/AUTOMATIC1111/stable-diffusion-webui at commit
c19d04436496ab29ddca4758a792831ae41b31de (1.10.0, the top entry of its CHANGELOG.md);
licence AGPL-3.0. Reproduced rule for rule, not copied: this workplace keeps public
repositories' code out of the project's commits, so each function below restates, in its
original name and order of steps, what the named A1111 function does:

* ``modules/infotext_utils.py``: ``re_param`` and ``re_imagesize`` (its patterns, as they
  are), ``quote``, ``unquote`` and ``parse_generation_parameters``;
* ``modules/processing.py``: the end of ``create_infotext``, which joins the fields;
* ``modules/sd_samplers.py``: ``get_sampler_and_scheduler`` and
  ``get_hr_sampler_and_scheduler``, over the 1.10 sampler and scheduler tables
  (``sd_samplers_kdiffusion``, ``sd_samplers_timesteps``, ``sd_samplers_lcm``,
  ``sd_schedulers``: names, aliases and each sampler's own schedule only);
* ``modules/sd_samplers_kdiffusion.py``: which schedule ``KDiffusionSampler.get_sigmas``
  samples with (``schedule_used``).

Left out of ``parse_generation_parameters``, as A1111's default settings leave them idle on
our texts: styles (none are defined), ``infotext_versions.backcompat`` (our ``Version`` is
no A1111 version, so it does nothing), ``restore_old_hires_fix_params`` (it acts on a
``First pass size`` field, which only texts before 1.0 have), the ``Emphasis`` default
(added for prompts with attention weights; it changes no other field) and
``infotext_skip_pasting`` (empty by default).
"""

from __future__ import annotations

import json
import re

re_param = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
re_imagesize = re.compile(r"^(\d+)x(\d+)$")

# modules/sd_samplers_kdiffusion.py samplers_k_diffusion: (name, aliases, options["scheduler"]).
KDIFFUSION_SAMPLERS: list[tuple[str, list[str], str | None]] = [
    ("DPM++ 2M", ["k_dpmpp_2m"], "karras"),
    ("DPM++ SDE", ["k_dpmpp_sde"], "karras"),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], "exponential"),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"], "exponential"),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"], "karras"),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"], "exponential"),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], None),
    ("Euler", ["k_euler"], None),
    ("LMS", ["k_lms"], None),
    ("Heun", ["k_heun"], None),
    ("DPM2", ["k_dpm_2"], "karras"),
    ("DPM2 a", ["k_dpm_2_a"], "karras"),
    ("DPM fast", ["k_dpm_fast"], None),
    ("DPM adaptive", ["k_dpm_ad"], None),
    ("Restart", ["restart"], "karras"),
]
# modules/sd_samplers_timesteps.py and sd_samplers_lcm.py: samplers that take no schedule.
TIMESTEP_SAMPLERS = ["DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"]
# sd_samplers.all_samplers, in order: its first is the default sampler.
SAMPLER_DEFAULT_SCHEDULE: dict[str, str | None] = {
    **{name: schedule for name, _, schedule in KDIFFUSION_SAMPLERS},
    **dict.fromkeys(TIMESTEP_SAMPLERS),
}
# modules/sd_schedulers.py schedulers: (name, label, aliases); its first is "Automatic".
SCHEDULERS: list[tuple[str, str, list[str]]] = [
    ("automatic", "Automatic", []),
    ("uniform", "Uniform", []),
    ("karras", "Karras", []),
    ("exponential", "Exponential", []),
    ("polyexponential", "Polyexponential", []),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
    ("kl_optimal", "KL Optimal", []),
    ("align_your_steps", "Align Your Steps", []),
    ("simple", "Simple", []),
    ("normal", "Normal", []),
    ("ddim", "DDIM", []),
    ("beta", "Beta", []),
]
SCHEDULER_LABELS = [label for _, label, _ in SCHEDULERS]
_SCHEDULERS_MAP = {
    **{name: (name, label) for name, label, _ in SCHEDULERS},
    **{label: (name, label) for name, label, _ in SCHEDULERS},
}


def quote(text: object) -> object:
    """A value as is, or JSON-quoted when it holds a comma, newline or colon."""
    if "," not in str(text) and "\n" not in str(text) and ":" not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    """A value in double quotes decoded as JSON (as is when that fails)."""
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        decoded: str = json.loads(text)
    except Exception:
        return text
    return decoded


def create_infotext(prompt: str, negative_prompt: str, generation_params: dict) -> str:
    """The text from the prompt, the negative prompt and the fields in order: a field whose
    value is None is left out, one whose value equals its key is the key alone."""
    params_text = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in generation_params.items() if v is not None
    )
    negative_text = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_text}\n{params_text}".strip()


def parse_generation_parameters(x: str) -> dict:
    """The fields of an infotext, as A1111's "PNG Info" and paste read them."""
    res: dict = {}
    prompt = ""
    negative_prompt = ""
    done_with_prompt = False

    *lines, lastline = x.strip().split("\n")
    if len(re_param.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""

    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative_prompt += ("" if negative_prompt == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line

    for k, v in re_param.findall(lastline):
        if not v:
            continue  # A1111 indexes v[0], and its except prints the field and drops it
        if v[0] == '"' and v[-1] == '"':
            v = unquote(v)
        m = re_imagesize.match(v)
        if m is not None:
            res[f"{k}-1"] = m.group(1)
            res[f"{k}-2"] = m.group(2)
        else:
            res[k] = v

    res["Prompt"] = prompt
    res["Negative prompt"] = negative_prompt
    defaults: dict[str, object] = {
        "Clip skip": "1",
        "Hires sampler": "Use same sampler",
        "Hires schedule type": "Use same scheduler",
        "Hires checkpoint": "Use same checkpoint",
        "Hires prompt": "",
        "Hires negative prompt": "",
        "Mask mode": "Inpaint masked",
        "Masked content": "original",
        "Inpaint area": "Whole picture",
        "Masked area padding": 32,
    }
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"] = 0
        res["Hires resize-2"] = 0
    defaults |= {
        "RNG": "GPU",
        "Schedule type": "Automatic",
        "Schedule max sigma": 0,
        "Schedule min sigma": 0,
        "Schedule rho": 0,
        "VAE Encoder": "Full",
        "VAE Decoder": "Full",
        "FP8 weight": "Disable",
    }
    for key, value in defaults.items():
        res.setdefault(key, value)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    res.setdefault("Refiner switch by sampling steps", False)
    return res


def get_sampler_and_scheduler(
    sampler_name: str | None, scheduler_name: str | None, *, convert_automatic: bool = True
) -> tuple[str, str]:
    """(sampler, schedule label) as the UI takes them from an infotext: a schedule suffix
    on the sampler's name ("DPM++ 2M Karras") wins over the schedule given; an unknown
    sampler is the default one; a schedule that is the sampler's own becomes "Automatic"."""
    default_sampler = next(iter(SAMPLER_DEFAULT_SCHEDULE))
    found = _SCHEDULERS_MAP.get(scheduler_name or "", (SCHEDULERS[0][0], SCHEDULERS[0][1]))
    name = sampler_name or default_sampler
    for scheduler_id, label, aliases in SCHEDULERS:
        for option in [label, scheduler_id, *aliases]:
            if name.endswith(" " + option):
                found = (scheduler_id, label)
                name = name[0 : -(len(option) + 1)]
                break
    sampler = name if name in SAMPLER_DEFAULT_SCHEDULE else default_sampler
    if convert_automatic and SAMPLER_DEFAULT_SCHEDULE[sampler] == found[0]:
        found = (SCHEDULERS[0][0], SCHEDULERS[0][1])
    return sampler, found[1]


def get_hr_sampler_and_scheduler(d: dict) -> tuple[str, str]:
    """The hires pass's (sampler, schedule label) from parsed fields, each "Use same …"
    where it is the first pass's."""
    hr_sampler = d.get("Hires sampler", "Use same sampler")
    sampler = d.get("Sampler") if hr_sampler == "Use same sampler" else hr_sampler
    hr_scheduler = d.get("Hires schedule type", "Use same scheduler")
    scheduler = d.get("Schedule type") if hr_scheduler == "Use same scheduler" else hr_scheduler
    sampler, scheduler = get_sampler_and_scheduler(sampler, scheduler)
    sampler = sampler if sampler != d.get("Sampler") else "Use same sampler"
    scheduler = scheduler if scheduler != d.get("Schedule type") else "Use same scheduler"
    return sampler, scheduler


def schedule_used(sampler: str, label: str) -> str | None:
    """The schedule ``KDiffusionSampler.get_sigmas`` samples ``sampler`` with for the UI's
    ``label``: the one named, or for "Automatic" the sampler's own; "uniform" for the
    model's own sigmas (with no schedule A1111 calls what "Uniform" calls). None for a
    timestep sampler, which takes no schedule."""
    if sampler in TIMESTEP_SAMPLERS:
        return None
    scheduler_id = _SCHEDULERS_MAP[label][0]
    if scheduler_id == "automatic":
        return SAMPLER_DEFAULT_SCHEDULE[sampler] or "uniform"
    return scheduler_id
