"""Writing the folder that goes to a Hub repository, and sending it as one commit with `huggingface_hub`.

The folder is complete on disk before anything is sent, and `HfApi.upload_folder` makes one commit of it, so a
failed push leaves the repository as it was. A dry run writes the same folder and sends nothing.
"""

import shutil
from collections.abc import Callable
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..files import staged_folder


class PushError(RuntimeError):
    """A push that cannot be made; nothing was sent."""


def check_repo_id(repo_id: str) -> str:
    """`repo_id` if it is a valid "namespace/name" Hub id.

    Raises:
        ValueError: naming the id and what is wrong with it.
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"A Hub repository id is 'namespace/name' (user or organisation, then name): {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{repo_id!r} is not a valid Hub repository id: {error}") from None
    return repo_id


def copy_files(source: str | Path, target: Path) -> None:
    """Copy the files of `source` (not hidden ones, not sub-folders) into `target`, which is created."""
    target.mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(source).iterdir()):
        if file.is_file() and not file.name.startswith("."):
            shutil.copy2(file, target / file.name)


def write_folder(out: str | Path, fill: Callable[[Path], None]) -> Path:
    """Write a folder to upload: `fill(staging)` writes everything into an empty staging folder beside `out`, which
    becomes `out` only once complete, so a failure leaves nothing half-written.

    Raises:
        FileExistsError: if `out` exists and is not empty (nothing is overwritten).
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not empty: remove it or give another folder")
    with staged_folder(out) as staging:
        fill(staging)
    return out


def push_folder(
    folder: str | Path,
    repo_id: str,
    repo_type: str = "model",
    private: bool = False,
    commit_message: str = "Upload from the LSTM hallucination lab",
    token: str | None = None,
) -> str:
    """Upload `folder` to the Hub repository `repo_id` (created if missing) as one commit; returns the commit's URL.

    The token (`token`, else the one `hf auth login` stored or `HF_TOKEN`) is checked with `whoami` before anything
    is created or sent.

    Raises:
        PushError: with no token, in offline mode, when the Hub cannot be reached or refuses the token, or when it
            refuses to create the repository or take the commit.
    """
    token = token or get_token()
    if not token:
        raise PushError(
            "No Hugging Face token: log in with `hf auth login` or set HF_TOKEN (a token with write access). "
            "Nothing was uploaded; --dry-run OUT writes the folder without a token."
        )
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as error:  # offline mode, no network, or a refused token: all stop the push the same way
        raise PushError(
            f"Cannot push to the Hub: {type(error).__name__}: {str(error).rstrip('.')}. Nothing was uploaded; check "
            "the network, "
            "HF_HUB_OFFLINE and the token, or use --dry-run OUT."
        ) from error
    print(f"push: as {user.get('name', '?')} to {repo_type} {repo_id}", flush=True)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type=repo_type, folder_path=str(folder), commit_message=commit_message
        )
    except Exception as error:  # a namespace the token may not write to, a refused or failed upload: all one way
        raise PushError(
            f"The Hub refused the push to {repo_type} {repo_id}: {type(error).__name__}: {str(error).rstrip('.')}. "
            "upload_folder makes one commit, so nothing of it was sent"
        ) from error
    return commit.commit_url


__all__ = ["PushError", "check_repo_id", "copy_files", "push_folder", "write_folder"]
