from __future__ import annotations

import stat

from fastapi.testclient import TestClient

from passthru.asgi import create_app
from passthru.controller.settings import Settings


def test_first_start_writes_an_admin_token_only_its_owner_can_read(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        token = settings.admin_token_path.read_text().strip()
        mode = stat.S_IMODE(settings.admin_token_path.stat().st_mode)
        answer = client.get("/v2/whoami", headers={"Authorization": f"Bearer {token}"})
    assert mode == 0o600
    assert answer.json() == {"role": "admin", "project": "admin", "host": None, "id": 1}


def test_a_restart_keeps_the_admin_token(settings: Settings) -> None:
    create_app(settings).state.store.close()
    first = settings.admin_token_path.read_text()
    create_app(settings).state.store.close()
    assert settings.admin_token_path.read_text() == first


def test_a_token_file_the_store_does_not_know_is_replaced(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True)
    settings.admin_token_path.write_text("pt_forged\n")
    with TestClient(create_app(settings)) as client:
        token = settings.admin_token_path.read_text().strip()
        forged = client.get("/v2/whoami", headers={"Authorization": "Bearer pt_forged"})
        real = client.get("/v2/whoami", headers={"Authorization": f"Bearer {token}"})
    assert token != "pt_forged"
    assert forged.status_code == 401
    assert real.status_code == 200
