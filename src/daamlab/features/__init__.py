"""The layer-wise feature cache (extraction, store, fingerprint): see DESIGN.md's cache contract."""

from __future__ import annotations

from daamlab.errors import DaamlabError


def cached_feature_set(cfg):
    raise DaamlabError(
        f"data '{cfg.data.name}' needs an encoder and the feature cache, which this version does not have yet; "
        "use modality=toy"
    )
