"""The parameters of a simulated data set (:class:`SimulationConfig`) and the named presets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from starcenter.cubes import constants as C
from starcenter.cubes.errors import BadArgumentError
from starcenter.cubes.sim.field import ClusterModel
from starcenter.cubes.sim.optics import PSFEpoch

#: HST orbital period (days), the period of focus breathing.
ORBIT_DAYS = 96.4 / 1440
#: Start of the PID 8267 (Gilliland) NGC 104 campaign, MJD (1999 July 3).
GILLILAND_START_MJD = 51362.0


@dataclass(frozen=True)
class SimulationConfig:
    """Parameters of one simulated data set (all of them are recorded in the store).

    focus_um is the data set's secondary-mirror despace relative to the library ePSF (the
    PSF epoch): 0 gives a library that matches the truth. sky is in e-/s/arcsec^2. cti: WFPC2's
    parallel CTE at each exposure's date (:mod:`starcenter.cubes.cte`).
    focus_sweep_um: per-exposure focus drawn (seeded) from these values, or with
    focus_sweep_range from the interval between its two values (a focus sweep for training and
    tests); chip_focus_um: per-chip focus offsets added to every exposure's focus, e.g.
    (("PC1", -5.0), ("WF3", 10.0)) (`simulate --like` of a real exposure); chip_density_scale:
    per-chip factors <= 1 on the star density (chips of a real field off one King profile).
    """

    n_exposures: int = 24
    chips: tuple[str, ...] = ("PC1", "WF3")
    filter: str = "F555W"
    exptime: float = 160.0
    atodgain: int = 7
    focus_um: float = 5.0
    breathing_um: float = 0.0
    field_varying: bool = False
    bright_enhanced: bool = False
    density: float = ClusterModel.density
    sky: float = 6.0
    cosmic_rays: bool = False
    cti: bool = False
    seed: int = 1
    start_mjd: float = GILLILAND_START_MJD
    cadence_days: float = 8.3 / 636
    focus_sweep_um: tuple[float, ...] = ()
    focus_sweep_range: bool = False
    chip_focus_um: tuple[tuple[str, float], ...] = ()
    chip_density_scale: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "focus_sweep_um", tuple(float(v) for v in self.focus_sweep_um))
        object.__setattr__(self, "chip_focus_um", tuple((str(c), float(v)) for c, v in self.chip_focus_um))
        object.__setattr__(self, "chip_density_scale",
                           tuple((str(c), float(v)) for c, v in self.chip_density_scale))
        if any(not 0 < v <= 1 for _, v in self.chip_density_scale):
            raise BadArgumentError(f"chip density scales must be in (0, 1], got {self.chip_density_scale}")
        if self.focus_sweep_range and len(self.focus_sweep_um) != 2:
            raise BadArgumentError(f"a focus range needs two values, got {self.focus_sweep_um}")
        if any(c not in self.chips for c, _ in self.chip_focus_um):
            raise BadArgumentError(f"chip focus offsets {self.chip_focus_um} name a chip not in {self.chips}")
        chips = tuple(self.chips)
        object.__setattr__(self, "chips", chips)
        bad = [c for c in chips if c not in C.CHIPS]
        if bad or not chips:
            raise BadArgumentError(f"unknown chip(s) {bad or chips}; expected some of {C.CHIPS}")
        if len(set(chips)) != len(chips):
            raise BadArgumentError(f"chip listed twice in {chips}")
        if self.filter not in C.FILTERS:
            raise BadArgumentError(f"unknown filter {self.filter!r}; expected one of {tuple(C.FILTERS)}")
        if int(self.n_exposures) < 2:
            raise BadArgumentError(f"need at least 2 exposures for a dithered set, got {self.n_exposures}")
        if self.atodgain not in C.GAIN:
            raise BadArgumentError(f"ATODGAIN must be 7 or 15, got {self.atodgain}")
        if self.exptime <= 0 or self.density <= 0 or self.sky < 0 or self.breathing_um < 0:
            raise BadArgumentError("exptime and density must be > 0, sky and breathing >= 0")

    def to_json(self) -> str:
        d = asdict(self)
        for k in ("focus_sweep_um", "focus_sweep_range", "chip_focus_um", "chip_density_scale"):
            if not d[k]:  # stores simulated before these options existed resume unchanged
                del d[k]
        return json.dumps(d, sort_keys=True)

    @property
    def epoch(self) -> PSFEpoch:
        return PSFEpoch(self.focus_um, self.breathing_um, self.field_varying,
                        sweep=self.focus_sweep_um, sweep_range=self.focus_sweep_range)

    def chip_focus(self, chip: str) -> float:
        """The focus offset (um) of ``chip`` added to every exposure's focus."""
        return dict(self.chip_focus_um).get(chip, 0.0)


#: Named presets. ``demo`` is the embedded default data set; ``gilliland`` the paper's scale.
PRESETS: dict[str, SimulationConfig] = {
    "demo": SimulationConfig(n_exposures=24, chips=("PC1", "WF3")),
    "gilliland": SimulationConfig(n_exposures=636, chips=C.CHIPS),
}


def make_config(preset: str = "demo", **overrides) -> SimulationConfig:
    """A preset with ``overrides`` (None values are ignored)."""
    if preset not in PRESETS:
        raise BadArgumentError(f"unknown preset {preset!r}; expected one of {tuple(PRESETS)}")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


