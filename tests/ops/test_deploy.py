"""`check --deploy` is clean under the production settings docs/production.md documents."""
import secrets
import subprocess
import sys

from tests.conftest import ROOT


def test_check_deploy_is_clean_with_the_documented_production_settings(process_env):
    env = {**process_env, "SLUICE_HTTPS": "1", "SECRET_KEY": secrets.token_urlsafe(50),
           "ALLOWED_HOSTS": "sluice.example.com"}
    env.pop("SLUICE_DEBUG", None)
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_without_them_check_deploy_names_what_is_missing(process_env):
    env = {k: v for k, v in process_env.items() if k not in ("SLUICE_HTTPS", "SLUICE_DEBUG")}
    result = subprocess.run([sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "security.W008" in result.stderr and "security.W004" in result.stderr
