"""runbooks_lib.redaction: a table of secret shapes that must be hidden and of look-alikes that must stay.

Every text goes through ``redact`` whole and through ``LineRedactor`` line by
line. Private key markers are assembled at run time (no key marker sits in the
repository) and key material is seeded random bytes, never a real key.
"""

from __future__ import annotations

import base64
import json
import random
import time

import pytest

from runbooks_lib.redaction import REDACTED, LineRedactor, redact

_RNG = random.Random(20240601)


def _b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _b64url(data: str) -> str:
    return base64.urlsafe_b64encode(data.encode()).decode().rstrip("=")


def _wrap(text: str, width: int) -> str:
    return "\n".join(text[i:i + width] for i in range(0, len(text), width))


def _random_b64(nbytes: int) -> str:
    return _b64(_RNG.randbytes(nbytes))


def _block(label: str, body: str, width: int = 64) -> str:
    return f"-----BEGIN {label}-----\n{_wrap(body, width)}\n-----END {label}-----\n"


def _streamed(text: str) -> str:
    redactor = LineRedactor()
    return "\n".join(s for s in (redactor.feed(line) for line in text.splitlines()) if s is not None)


RSA = "RSA " + "PRIVATE KEY"
KEY_BODY = _random_b64(900)
KEY_LINES = _wrap(KEY_BODY, 64).splitlines()
KEY = _block(RSA, KEY_BODY)
CERT_BODY = _random_b64(700)
CERT = _block("CERTIFICATE", CERT_BODY)
CA_DATA = _b64(_block("CERTIFICATE", _random_b64(500)))
CLIENT_KEY_DATA = _b64(KEY)
SA_TOKEN = ".".join([
    _b64url('{"alg":"RS256","kid":"Zm9vYmFy"}'),
    _b64url('{"iss":"kubernetes/serviceaccount","sub":"system:serviceaccount:kube-system:admin-user"}'),
    _b64url("fake-signature-" * 8),
])
CERT_KEY = "9a08f5e6b2c1d4e3f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8"
SHA = "3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8559"
KUBECONFIG_WITH_KEY = (
    "apiVersion: v1\nclusters:\n- cluster:\n"
    f"    certificate-authority-data: {CA_DATA}\n    server: https://10.0.0.10:6443\n  name: cluster.local\n"
    "users:\n- name: kubernetes-admin\n  user:\n"
    f"    client-certificate-data: {_b64(CERT)}\n    client-key-data: {CLIENT_KEY_DATA}\n"
)
KUBECONFIG_WITH_TOKEN = (
    "apiVersion: v1\nclusters:\n- cluster:\n"
    f"    certificate-authority-data: {CA_DATA}\n    server: https://10.0.0.10:6443\n"
    f"users:\n- name: admin-user\n  user:\n    token: {SA_TOKEN}\n"
)
BUNDLE_B64 = _b64(CERT + KEY)  # a certificate then its key: the key starts deep inside the blob
KEY_B64 = _b64(KEY)
PREFIXED_KEY_B64 = _b64("# the node key\n" + KEY)  # the key does not start at byte 0
ED25519_PUB = _b64(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00 " + _RNG.randbytes(32))
RSA_PUB = _b64(b"\x00\x00\x00\x07ssh-rsa" + _RNG.randbytes(400))
HARMLESS_B64 = _b64("harmless release notes line\n" * 12)


def _putty(version: int, encrypted: bool) -> tuple[str, list[str]]:
    private = _wrap(_random_b64(700), 64)
    mac = _RNG.randbytes(32).hex()
    header = [f"PuTTY-User-Key-File-{version}: ssh-rsa", f"Encryption: {'aes256-cbc' if encrypted else 'none'}",
              "Comment: rsa-key-20240601"]
    if version == 3 and encrypted:
        header += ["Key-Derivation: Argon2id", "Argon2-Memory: 8192", "Argon2-Passes: 13",
                   "Argon2-Parallelism: 1", f"Argon2-Salt: {_RNG.randbytes(16).hex()}"]
    text = "\n".join([*header, "Public-Lines: 6", _wrap(_random_b64(279), 64),
                      f"Private-Lines: {len(private.splitlines())}", private, f"Private-MAC: {mac}", ""])
    return text, [*private.splitlines(), mac]


PUTTY2, PUTTY2_SECRETS = _putty(2, encrypted=False)
PUTTY3, PUTTY3_SECRETS = _putty(3, encrypted=True)
PGP_BODY = _wrap(_random_b64(1200), 64)
PGP = ("-----BEGIN PGP " + "PRIVATE KEY BLOCK-----\n" + "Version: GnuPG v2\n\n" + PGP_BODY + "\n=Qx4N\n"
       + "-----END PGP " + "PRIVATE KEY BLOCK-----\n")
DOCKER_CONFIG = json.dumps({"auths": {"registry.example:5000": {
    "username": "deploy", "password": "Dock3rPassw0rd", "auth": _b64("deploy:Dock3rPassw0rd")}}})


def _wrapped_blob_secrets(blob: str, width: int, last: int) -> list[str]:
    """Full lines among the last ``last`` of ``blob`` wrapped at ``width``: they encode the key at its end."""
    return [line for line in _wrap(blob, width).splitlines()[-last:] if len(line) == width]


SECRETS = [
    # -- kubeadm
    pytest.param(f"kubeadm join 10.0.0.10:6443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash "
                 f"sha256:{SHA} --control-plane --certificate-key {CERT_KEY}",
                 [CERT_KEY, "0123456789abcdef"], id="kubeadm-join-certificate-key"),
    pytest.param(f"kubeadm init phase upload-certs --upload-certs --certificate-key={CERT_KEY}", [CERT_KEY],
                 id="kubeadm-certificate-key-equals"),
    pytest.param("[upload-certs] Storing the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" NS\n"
                 f"[upload-certs] Using certificate key:\n{CERT_KEY}\n[mark-control-plane] Marking the node node1",
                 [CERT_KEY], id="kubeadm-using-certificate-key-next-line"),
    pytest.param(f"apiVersion: kubeadm.k8s.io/v1beta3\nkind: JoinConfiguration\ncontrolPlane:\n"
                 f"  certificateKey: \"{CERT_KEY}\"\n", [CERT_KEY], id="kubeadm-config-certificateKey"),
    pytest.param("kubeadm join 10.0.0.10:6443 --token abcdef.0123456789abcdef", ["0123456789abcdef"],
                 id="kubeadm-bootstrap-token"),
    # -- JWTs and bearer tokens
    pytest.param(f"$ kubectl -n kube-system create token admin-user\n{SA_TOKEN}\n", [SA_TOKEN.split(".", 1)[1]],
                 id="jwt-bare-serviceaccount-token"),
    pytest.param(f"level=info msg=\"refreshed id token {SA_TOKEN} for user\"", [SA_TOKEN.split(".", 1)[1]],
                 id="jwt-inside-log-line"),
    pytest.param(f"curl -sk -H 'Authorization: Bearer {SA_TOKEN}' https://10.0.0.10:6443/api",
                 [SA_TOKEN.split(".", 1)[1]], id="bearer-header"),
    # -- passwords on command lines
    pytest.param("mysql -h db.example -u root -pS3cr3tPw -e 'select 1'", ["S3cr3tPw"], id="mysql-p-glued"),
    pytest.param("mysqldump -u backup -pBackupPw123 --all-databases > all.sql", ["BackupPw123"],
                 id="mysqldump-p-glued"),
    pytest.param("sshpass -p 'Ssh9assW' ssh -p 22 root@10.0.0.11 uptime", ["Ssh9assW"], id="sshpass-p"),
    pytest.param("sshpass -v -pGluedSshPw ssh root@10.0.0.11", ["GluedSshPw"], id="sshpass-p-glued"),
    pytest.param("docker login -u deploy -p Dock3rPassw0rd registry.example:5000", ["Dock3rPassw0rd"],
                 id="docker-login-p"),
    pytest.param("docker login --username deploy --password Dock3rPassw0rd registry.example:5000",
                 ["Dock3rPassw0rd"], id="docker-login-password"),
    pytest.param("podman login -u deploy -p P0dmanPw quay.example && podman pull quay.example/app",
                 ["P0dmanPw"], id="podman-login-p"),
    pytest.param("ETCDCTL_API=3 etcdctl --user root:Etcd9Root member list", ["Etcd9Root"], id="etcdctl-user-colon"),
    pytest.param("etcdctl --endpoints=https://10.0.0.10:2379 --user=root:Etcd9Root endpoint health",
                 ["Etcd9Root"], id="etcdctl-user-equals"),
    pytest.param("curl -sf -u admin:Curl9Pass https://registry.example/v2/_catalog", ["Curl9Pass"], id="curl-u"),
    pytest.param("etcdctl --password hunter22 member list", ["hunter22"], id="option-password"),
    # -- cloud keys
    pytest.param("export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", ["AKIAIOSFODNN7EXAMPLE"], id="aws-access-key-id"),
    pytest.param("aws_access_key_id: ASIAY34FZKBOKMUTVV7A", ["ASIAY34FZKBOKMUTVV7A"], id="aws-temporary-key-id"),
    pytest.param("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                 ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"], id="aws-secret-env"),
    pytest.param("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
                 "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
                 ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE"], id="aws-credentials-file"),
    pytest.param("google_api_key=AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", ["AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW"],
                 id="google-api-key"),
    # -- API keys and HTTP headers
    pytest.param("api_key: 4f9c2e7d1a", ["4f9c2e7d1a"], id="api_key-colon"),
    pytest.param("monitoring apikey=Zx81Qp0Lm2 region=eu", ["Zx81Qp0Lm2"], id="apikey-equals"),
    pytest.param("  api-key: \"quoted key value\"", ["quoted key value"], id="api-key-quoted"),
    pytest.param("curl -H 'X-Api-Key: k3yV4lue99' https://api.example/v1", ["k3yV4lue99"], id="x-api-key-header"),
    pytest.param("curl -H \"Authorization: Basic ZGVwbG95OkRvY2szclBhc3N3MHJk\" https://registry.example/v2/",
                 ["ZGVwbG95OkRvY2szclBhc3N3MHJk"], id="authorization-basic"),
    pytest.param("Proxy-Authorization: Basic cHJveHk6cHJveHlwYXNz", ["cHJveHk6cHJveHlwYXNz"],
                 id="proxy-authorization"),
    pytest.param("> GET / HTTP/1.1\n> Cookie: session=0a1b2c3d4e; csrftoken=f5e6d7c8\n",
                 ["0a1b2c3d4e", "f5e6d7c8"], id="cookie-header"),
    pytest.param("< Set-Cookie: grafana_session=9f8e7d6c5b4a; Path=/; HttpOnly", ["9f8e7d6c5b4a"], id="set-cookie"),
    pytest.param("{\"private_key\": \"abc-private-123\", \"secret_key\": \"def-secret-456\"}",
                 ["abc-private-123", "def-secret-456"], id="private-and-secret-key-json"),
    # -- vendor-prefixed tokens
    pytest.param("git clone https://ghp_1234567890abcdefghijABCDEFGHIJ123456@github.com/org/repo",
                 ["ghp_1234567890abcdefghijABCDEFGHIJ123456"], id="github-ghp"),
    pytest.param("GH_TOKEN=gho_16C7e42F292c6912E7710c838347Ae178B4a", ["gho_16C7e42F292c6912E7710c838347Ae178B4a"],
                 id="github-gho"),
    pytest.param("installation token ghs_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                 ["ghs_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"], id="github-ghs"),
    pytest.param("user token: ghu_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210", ["ghu_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210"],
                 id="github-ghu"),
    pytest.param("echo github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz | gh auth login --with-token",
                 ["github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"], id="github-fine-grained-pat"),
    pytest.param("SLACK_BOT=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
                 ["xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"], id="slack-xoxb"),
    pytest.param("slack user xoxp-123456789012-123456789012-123456789012-abcdef0123456789",
                 ["xoxp-123456789012-123456789012-123456789012-abcdef0123456789"], id="slack-xoxp"),
    pytest.param("notify with xoxa-2-1234567890-abcdefABCDEF", ["xoxa-2-1234567890-abcdefABCDEF"], id="slack-xoxa"),
    pytest.param("git push https://oauth2:glpat-AbCdEfGhIjKlMnOpQrSt@gitlab.example/grp/proj.git",
                 ["glpat-AbCdEfGhIjKlMnOpQrSt"], id="gitlab-glpat"),
    pytest.param("stripe key sk_live_51Habcdefghijklmnop0123", ["sk_live_51Habcdefghijklmnop0123"],
                 id="stripe-sk-live"),
    # -- private key blocks
    pytest.param(f"key:\n{KEY}cert:\n{CERT}", [KEY_LINES[3], KEY_LINES[-1]], id="pem-rsa-key"),
    pytest.param(_block("ENCRYPTED " + "PRIVATE KEY", KEY_BODY), [KEY_LINES[5]], id="pem-encrypted-pkcs8"),
    pytest.param(f"gpg --export-secret-keys --armor ops@example\n{PGP}done", [PGP_BODY.splitlines()[4], "=Qx4N"],
                 id="pgp-private-key-block"),
    pytest.param("-----BEGIN PGP " + "PRIVATE KEY BLOCK-----\n\n" + PGP_BODY, [PGP_BODY.splitlines()[-1]],
                 id="pgp-truncated"),
    pytest.param(PUTTY2, PUTTY2_SECRETS, id="putty-v2"),
    pytest.param(PUTTY3, PUTTY3_SECRETS, id="putty-v3-encrypted"),
    # -- base64 holding secrets
    pytest.param(f"    client-key-data: {CLIENT_KEY_DATA}\n", [CLIENT_KEY_DATA[:40], CLIENT_KEY_DATA[-40:]],
                 id="kubeconfig-client-key-data"),
    pytest.param(f"  tls.pem: {BUNDLE_B64}\n", [BUNDLE_B64[-60:]], id="b64-cert-key-bundle-one-line"),
    pytest.param(f"$ base64 bundle.pem\n{_wrap(BUNDLE_B64, 76)}\n$ echo done",
                 _wrapped_blob_secrets(BUNDLE_B64, 76, 10), id="b64-cert-key-bundle-wrapped-76"),
    pytest.param(f"admin_kubeconfig: {_b64(KUBECONFIG_WITH_KEY)}", [_b64(KUBECONFIG_WITH_KEY)[-80:]],
                 id="b64-kubeconfig-one-line"),
    pytest.param(f"{_wrap(_b64(KUBECONFIG_WITH_TOKEN), 76)}\n",
                 _wrapped_blob_secrets(_b64(KUBECONFIG_WITH_TOKEN), 76, 2), id="b64-kubeconfig-token-wrapped-76"),
    pytest.param(f"before\n{_wrap(KEY_B64, 76)}\nafter", _wrap(KEY_B64, 76).splitlines(),
                 id="b64-key-wrapped-76-every-line"),
    pytest.param("data:\n  tls.key: |\n" + "\n".join("    " + line for line in _wrap(KEY_B64, 64).splitlines()),
                 _wrap(KEY_B64, 64).splitlines(), id="b64-key-wrapped-64-indented"),
    pytest.param(f"echo {PREFIXED_KEY_B64} | base64 -d > node.key", [PREFIXED_KEY_B64[-60:]],
                 id="b64-key-not-at-byte-0"),
    pytest.param(f"  config.json: {_b64(DOCKER_CONFIG)}", [_b64(DOCKER_CONFIG)], id="b64-docker-config"),
    pytest.param(f"  .dockerconfigjson: {_b64(DOCKER_CONFIG)}", [_b64(DOCKER_CONFIG)[:30]], id="dockerconfigjson"),
    # -- URLs and key: value
    pytest.param("pulling from https://deploy:p@ss@registry.example/v2/app", ["p@ss", "ss@registry"],
                 id="url-password-with-at"),
    pytest.param("postgres://app:p@ss@w0rd@db.example:5432/app?sslmode=require", ["p@ss", "w0rd"],
                 id="url-password-with-two-ats"),
    pytest.param("redis://:R3disPw@10.0.0.12:6379/0", ["R3disPw"], id="url-empty-user"),
    pytest.param("ansible_become_pass=s3cr3t ansible_host=10.0.0.11", ["s3cr3t"], id="ansible-become-pass"),
    pytest.param('{"ansible_password": "pw with spaces"}', ["pw with spaces"], id="json-password"),
]

LOOKALIKES = [
    pytest.param(f"{SHA}  kubeadm-v1.30.4-amd64", id="sha256-digest"),
    pytest.param(f"image: registry.k8s.io/kube-apiserver@sha256:{SHA}", id="image-digest"),
    pytest.param("256 SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8 root@node1 (ED25519)", id="ssh-fingerprint"),
    pytest.param("revision: 1234567 raft_term: 42 member_id: 8e9e05c52164694d", id="etcd-revision"),
    pytest.param('  resourceVersion: "8851234"\n  generation: 3', id="resource-version"),
    pytest.param("  uid: 0f5a5c7e-9a3b-4f1e-8c2d-1b2a3c4d5e6f", id="kubernetes-uid"),
    pytest.param(f"subject=CN = kube-apiserver\n{CERT}", id="certificate-pem"),
    pytest.param(f"ssh-ed25519 {ED25519_PUB} ops@laptop", id="ssh-ed25519-public-key"),
    pytest.param(f"ssh-rsa {RSA_PUB} root@node1", id="ssh-rsa-public-key"),
    pytest.param("commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nAuthor: Ops <ops@example.com>", id="git-commit"),
    pytest.param("4b825dc642cb6eb9a060e54bf8d69288fbee4904\n8a1f0e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3\n"
                 "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391", id="git-hashes-on-consecutive-lines"),
    pytest.param("token_file: /etc/kubernetes/tokens/known_tokens.csv\npassword_file: /root/.pw\n"
                 "kube_token_dir: /etc/kubernetes/tokens\nsecret_path: /run/secrets", id="file-path-dir-keys"),
    pytest.param(f"- cluster:\n    certificate-authority-data: {CA_DATA}\n    server: https://10.0.0.10:6443",
                 id="kubeconfig-certificate-authority-data"),
    pytest.param(f"    client-certificate-data: {_b64(CERT)}", id="kubeconfig-client-certificate-data"),
    pytest.param("the tokenizer passed the keyboard test; tokens=12 passes=3", id="ordinary-words"),
    pytest.param("apiserver 10.0.0.10:6443, etcd https://10.0.0.11:2379, dns 169.254.25.10:53", id="ips-and-ports"),
    pytest.param("ssh -p 22 -i ~/.ssh/id_ed25519 root@10.0.0.11", id="ssh-p-port"),
    pytest.param("docker run -d -p 80:80 -p 443:443 nginx", id="docker-run-p-port"),
    pytest.param("cat pw | docker login --username deploy --password-stdin registry.example:5000",
                 id="docker-login-password-stdin"),
    pytest.param("mysql -h db -P 3306 -u root -p", id="mysql-prompting-p"),
    pytest.param("password: [redacted]\n[redacted]\ntoken=[redacted]", id="already-redacted"),
    pytest.param("node1 : ok=20 changed=3 unreachable=0 failed=0 skipped=5 rescued=0 ignored=0", id="play-recap"),
    pytest.param('kube_password: "{{ vault_kube_password }}"', id="jinja-placeholder"),
    pytest.param("docker run --rm --user 1000:1000 busybox id", id="uid-gid-user"),
    pytest.param("https://registry.example:5000/v2/_catalog git@github.com:org/repo.git ssh://git@host:22/x",
                 id="urls-without-password"),
    pytest.param(f"kubeadm join 10.0.0.10:6443 --discovery-token-ca-cert-hash sha256:{SHA}", id="ca-cert-hash"),
    pytest.param(f"  notes: {_b64('just a harmless configuration note, nothing to hide here at all')}",
                 id="b64-harmless-one-line"),
    pytest.param(_wrap(HARMLESS_B64, 76), id="b64-harmless-wrapped"),
    pytest.param("kube-apiserver --authorization-mode=Node,RBAC --anonymous-auth=false", id="authorization-mode"),
    pytest.param("kubectl --token-file /etc/k --dry-run", id="token-file-option"),
    pytest.param("  automountServiceAccountToken: false\n  secretName: tls-cert\nkind: Secret", id="secret-ish-keys"),
    pytest.param("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: ops\nPublic-Lines: 2\n"
                 + _wrap(_random_b64(51), 64), id="putty-public-part"),
]


@pytest.mark.parametrize(("text", "secrets"), SECRETS)
def test_secret_is_hidden_whole_and_streamed(text: str, secrets: list[str]) -> None:
    whole, streamed = redact(text), _streamed(text)
    for secret in secrets:
        assert secret not in whole, f"{secret!r} shown by redact():\n{whole}"
        assert secret not in streamed, f"{secret!r} shown by LineRedactor:\n{streamed}"
    assert REDACTED in whole and REDACTED in streamed
    assert redact(whole) == whole  # redacting twice changes nothing


@pytest.mark.parametrize("text", LOOKALIKES)
def test_lookalike_stays_whole_and_streamed(text: str) -> None:
    assert redact(text) == text
    redactor = LineRedactor()
    lines = text.splitlines()
    assert [redactor.feed(line) for line in lines] == lines


def test_a_wrapped_secret_blob_streams_as_one_marker_and_the_next_lines_show() -> None:
    text = f"before\n{_wrap(KEY_B64, 76)}\nafter\nPLAY RECAP"
    assert _streamed(text) == f"before\n{REDACTED}\nafter\nPLAY RECAP" == redact(text)


def test_a_bundle_streams_its_certificate_part_and_hides_from_the_key_on() -> None:
    text = f"{_wrap(BUNDLE_B64, 76)}\nnext"
    shown = _streamed(text).splitlines()
    assert shown[0] == text[:76] and shown[-2:] == [REDACTED, "next"]
    assert redact(text) == f"{REDACTED}\nnext"


def test_pathological_inputs_stay_fast() -> None:
    # Each took seconds to minutes with unbounded prefixes or command spans; all are linear now.
    texts = [
        "a-" * 50_000 + "password",
        "-" * 100_000 + " password x",
        "x://" * 20_000,
        "mysql " * 20_000,
        "curl -u " * 20_000,
        "docker login " * 10_000,
        "sshpass" + " -x" * 20_000,
        "A" * 200_000,
        ("QUJD" * 19 + "\n") * 5_000,
        "eyJaaaaaaaaaa." * 20_000,
        "https://u:" + "@" * 50_000,
    ]
    start = time.monotonic()
    for text in texts:
        redact(text)
        redactor = LineRedactor()
        for line in text.splitlines():
            redactor.feed(line)
    assert time.monotonic() - start < 15
