"""Moving a control plane's static pod manifests aside and back (real shell, temporary directories)."""

from __future__ import annotations

import socket
import stat
from pathlib import Path

from runbooks_lib import controlplane_pods as cpp
from runbooks_lib import ssh


def _dirs(tmp_path: Path, *names: str) -> dict[str, str]:
    md = tmp_path / "manifests"
    md.mkdir()
    for name in names:
        (md / name).write_text(f"# {name}\n")
    (md / "etcd.yaml").write_text("# not ours to move\n")
    return {"manifest_dir": str(md), "aside_dir": str(tmp_path / "aside")}


def test_aside_then_back_moves_only_the_control_plane_manifests(tmp_path: Path) -> None:
    conn = ssh.LocalConnection("cp1")
    where = _dirs(tmp_path, *cpp.MANIFESTS)
    before = cpp.manifest_places(conn, **where)
    assert before.in_place == cpp.MANIFESTS and before.aside == () and before.apiserver_known
    assert cpp.move_aside(conn, **where) == cpp.MANIFESTS
    assert sorted(p.name for p in Path(where["manifest_dir"]).iterdir()) == ["etcd.yaml"]
    assert stat.S_IMODE(Path(where["aside_dir"]).stat().st_mode) == 0o700
    aside = cpp.manifest_places(conn, **where)
    assert aside.in_place == () and aside.aside == cpp.MANIFESTS and aside.apiserver_known
    assert cpp.move_aside(conn, **where) == ()  # a re-run: nothing left to move
    assert cpp.move_back(conn, **where) == cpp.MANIFESTS
    assert not Path(where["aside_dir"]).exists()
    assert (Path(where["manifest_dir"]) / "kube-apiserver.yaml").read_text() == "# kube-apiserver.yaml\n"
    assert cpp.move_back(conn, **where) == ()


def test_back_never_overwrites_a_newer_manifest_and_missing_ones_are_seen(tmp_path: Path) -> None:
    conn = ssh.LocalConnection("cp1")
    where = _dirs(tmp_path, "kube-apiserver.yaml", "kube-scheduler.yaml")  # no controller-manager here
    assert cpp.move_aside(conn, **where) == ("kube-apiserver.yaml", "kube-scheduler.yaml")
    (Path(where["manifest_dir"]) / "kube-apiserver.yaml").write_text("# newer, by Kubespray\n")
    assert cpp.move_back(conn, **where) == ("kube-scheduler.yaml",)
    assert (Path(where["manifest_dir"]) / "kube-apiserver.yaml").read_text() == "# newer, by Kubespray\n"
    assert (Path(where["aside_dir"]) / "kube-apiserver.yaml").is_file()  # kept, with its directory
    places = cpp.manifest_places(conn, **where)
    assert places.in_place == ("kube-apiserver.yaml", "kube-scheduler.yaml") and places.aside == ("kube-apiserver.yaml",)
    empty = tmp_path / "other"
    empty.mkdir()
    none = cpp.manifest_places(conn, manifest_dir=str(empty), aside_dir=str(tmp_path / "nowhere"))
    assert not none.apiserver_known


def test_apiserver_listening_tells_a_listener_from_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert cpp.apiserver_listening("127.0.0.1", port)
    assert not cpp.apiserver_listening("127.0.0.1", port, timeout=1.0)
