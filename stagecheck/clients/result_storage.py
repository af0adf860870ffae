"""Prefect result storage, as the settings name it (`result_storage`): a storage block slug
(`local-file-system/reports`, `gcs-bucket/stagecheck`, ...) or a folder; unset, Prefect's default result
storage (PREFECT_DEFAULT_RESULT_STORAGE_BLOCK, else the local storage path). What a run must not lose
with a short-lived worker lives there: the JSON reports and the records of pushed images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stagecheck.pushed_images import PushedImage, record_path
from stagecheck.settings import BLOCK_SLUG_RE

if TYPE_CHECKING:
    from prefect.filesystems import WritableFileSystem
    from prefect.results import ResultStore


def is_block_slug(value: str) -> bool:
    """Pure: `type-slug/name` names a storage block; anything else is a folder."""
    return bool(BLOCK_SLUG_RE.match(value))


async def resolve_storage(setting: str | None) -> WritableFileSystem:
    """The storage block the setting names (loaded from the Prefect API), a LocalFileSystem for a folder,
    or Prefect's default result storage."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import aget_default_result_storage, aresolve_result_storage

    if setting is None:
        return await aget_default_result_storage()
    if is_block_slug(setting):
        return await aresolve_result_storage(setting)
    return LocalFileSystem(basepath=setting)  # LocalFileSystem expands ~ itself


async def result_store(setting: str | None) -> ResultStore:
    """A Prefect ResultStore on that storage, records serialised as JSON (readable without stagecheck)."""
    from prefect.results import ResultStore
    from prefect.serializers import JSONSerializer

    return ResultStore(result_storage=await resolve_storage(setting), serializer=JSONSerializer())


class PushedImageRecords:
    """The records of pushed images, by build key, in the result storage."""

    def __init__(self, setting: str | None) -> None:
        self.setting = setting
        self._store: ResultStore | None = None

    async def _get_store(self) -> ResultStore:
        if self._store is None:
            self._store = await result_store(self.setting)
        return self._store

    async def find(self, key: str) -> PushedImage | None:
        """The record of `key`, or None (none kept, or unreadable: then the image is simply built)."""
        store = await self._get_store()
        try:
            if not await store.aexists(record_path(key)):
                return None
            data: Any = (await store.aread(record_path(key))).result
            record = PushedImage.model_validate(data)
        except Exception:  # a broken or foreign record is no reason to fail: build instead
            return None
        return record if record.key == key else None

    async def remember(self, record: PushedImage) -> None:
        store = await self._get_store()
        await store.awrite(obj=record.model_dump(mode="json"), key=record_path(record.key))
