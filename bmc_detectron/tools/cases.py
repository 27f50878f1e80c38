"""Cases that last: import counts into the case database, list, show and export them.

    bmc cases init                                   # create the database (default location)
    bmc cases upgrade                                # migrate it (alembic upgrade head)
    bmc cases import reports/case42 [--case-id C42] [--lab hema]  # a finished count's report
    bmc cases list [--search 42] [--status signed] [--since 2025-01-01] [--until 2025-12-31]
                   [--lab hema]
    bmc cases show C42 [--version 1] [--json]
    bmc cases export-coco C42 C43 --output reviewed.json [--images-dir DIR] [--lab hema]
    bmc cases export-labelstudio --out tasks.json [--signed-only] [--image-root URL] [--lab hema]
                   [C42 ...]
    bmc cases add-user alice --role reviewer --lab hema  # password: a prompt or --password-file
    bmc cases end-sessions alice                     # log alice out of the web page everywhere
    bmc cases next [--strategy entropy] [--budget 10] # unreviewed cases, for active learning
    bmc cases check [--amcheck]                      # is the database whole (exit 1: problems)

Every subcommand takes ``--db URL`` (default ``$BMC_CASES_DB``, else an SQLite file in the user's
data folder) and ``--images DIR`` (the image store; default beside an SQLite file). The library is
:mod:`bmc_detectron.cases`. Exit status: 0 done, 2 refused (one line on stderr naming why), 1 a
``check`` that found problems.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence

from bmc_detectron.cases.errors import CaseError
from bmc_detectron.cases.states import DEFAULT_LAB, ROLES, STATUSES
from bmc_detectron.utils.io import atomic_write_text, write_json_atomic

if TYPE_CHECKING:
    from bmc_detectron.cases.db import CaseDB

PASSWORD_ENV = "BMC_CASES_PASSWORD"
RANK_STRATEGIES = ("entropy", "margin", "least_confidence")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments (one subparser per job)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    db_help = "SQLAlchemy URL (default: $BMC_CASES_DB, else SQLite in the user's data folder)"
    common.add_argument("--db", default=None, help=db_help)
    images_help = "image store folder (default: beside an SQLite file, else $BMC_CASES_IMAGES)"
    common.add_argument("--images", default=None, help=images_help)
    sub = p.add_subparsers(dest="job", required=True, metavar="JOB")
    sub.add_parser("init", parents=[common], help="create the case database")
    sub.add_parser("upgrade", parents=[common], help="migrate the database (alembic upgrade head)")
    imp = sub.add_parser("import", parents=[common], help="import a count's report folder")
    imp.add_argument("report", help="a finished `bmc count` output folder")
    imp.add_argument("--case-id", default=None, help="the case id (default: the folder's name)")
    imp.add_argument("--user", default=None, help="who imports (default: the login name)")
    imp.add_argument("--inputs-root", default=None, help="where the count's images are now")
    imp.add_argument("--lab", default=DEFAULT_LAB, help=f"the lab that owns it ({DEFAULT_LAB})")
    ls = sub.add_parser("list", parents=[common], help="list cases, newest first")
    ls.add_argument("--search", default="", help="part of the case id")
    ls.add_argument("--status", choices=STATUSES, default=None)
    ls.add_argument("--since", type=_date, default=None, help="created on or after (YYYY-MM-DD)")
    ls.add_argument("--until", type=_date, default=None, help="created on or before")
    ls.add_argument("--all-versions", action="store_true", help="every version, not the latest")
    ls.add_argument("--lab", default=None, help="only this lab's cases (default: every lab)")
    show = sub.add_parser("show", parents=[common], help="one case: fields, counts, sign-offs")
    show.add_argument("case", help="case id")
    show.add_argument("--version", type=int, default=None, help="default: the latest")
    show.add_argument("--json", action="store_true", help="the whole case as stored, as JSON")
    exp = sub.add_parser("export-coco", parents=[common], help="signed cases' cells as COCO")
    exp.add_argument("cases", nargs="+", help="case ids (each one's latest signed version)")
    exp.add_argument("--output", required=True, help="COCO json to write")
    exp.add_argument("--images-dir", default=None, help="also copy the images here")
    exp_lab = "only this lab's cases: a case of another lab is refused (default: every lab)"
    exp.add_argument("--lab", default=None, help=exp_lab)
    ls_help = "cases as Label Studio tasks (model boxes: predictions; signed boxes: annotations)"
    lst = sub.add_parser("export-labelstudio", parents=[common], help=ls_help)
    lst.add_argument("cases", nargs="*", help="case ids (default: every case)")
    lst.add_argument("--out", "--output", dest="output", required=True, help="tasks json to write")
    cfg_help = "labelling config (XML) to write (default: labeling.xml beside --out)"
    lst.add_argument("--config", default=None, help=cfg_help)
    lst.add_argument("--signed-only", action="store_true", help="each case's latest signed version")
    root_help = "data.image = this path or URL prefix + the image's path in the store"
    lst.add_argument("--image-root", default=None, help=root_help + " (default: its full path)")
    lst_lab = "only this lab's cases (no case named: every case of the lab; default: every lab)"
    lst.add_argument("--lab", default=None, help=lst_lab)
    user = sub.add_parser("add-user", parents=[common], help="add a local account")
    user.add_argument("name")
    user.add_argument("--role", choices=ROLES, default="reviewer")
    lab_help = "the user's lab (required for a reviewer; an admin without one: every lab)"
    user.add_argument("--lab", default=None, help=lab_help)
    pw_help = f"file holding the password (else ${PASSWORD_ENV}, else a prompt)"
    user.add_argument("--password-file", default=None, help=pw_help)
    user.add_argument("--user", default=None, help="who adds it (default: the login name)")
    end = sub.add_parser("end-sessions", parents=[common], help="log a user out everywhere")
    end.add_argument("name", help="whose sessions of the web page end")
    end.add_argument("--user", default=None, help="who does it (default: the login name)")
    nxt = sub.add_parser("next", parents=[common], help="unreviewed cases, most uncertain first")
    nxt.add_argument("--strategy", choices=RANK_STRATEGIES, default="entropy")
    nxt.add_argument("--aggregate", choices=("max", "mean", "sum"), default="max")
    nxt.add_argument("--budget", type=int, default=10, help="how many to list")
    chk = sub.add_parser("check", parents=[common], help="integrity check (exit 1: problems)")
    chk.add_argument("--amcheck", action="store_true", help="PostgreSQL: create amcheck first")
    return p


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _init(db: CaseDB, args: argparse.Namespace) -> int:
    revision, created = db.create()
    what = "created the case database at" if created else "case database already at"
    print(f"{what} {db.url} (revision {revision})\nimages stored in {db.store.root}")
    return 0


def _upgrade(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.db import schema_state

    before = schema_state(db.engine)[1]
    after = db.upgrade()
    print(f"{db.url}: revision {before or 'none'} -> {after}")
    return 0


def _import(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.importer import import_report

    with db.session() as s:
        inputs = None if args.inputs_root is None else Path(args.inputs_root)
        actor = args.user or _login()
        case = import_report(s, db.store, Path(args.report), actor, args.case_id, inputs, args.lab)
        cells = sum(len(f.cells) for f in case.fields)
        print(
            f"imported {args.report} as case {case.case_id} of lab {case.lab}: "
            f"{len(case.fields)} field(s), {cells} cell(s)"
        )
    return 0


def _list(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.queries import case_list_text, find_cases

    with db.session() as s:
        cases = find_cases(
            s, args.search, args.status, args.since, args.until, args.all_versions, args.lab
        )
        print(case_list_text(cases))
    return 0


def _show(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.queries import case_json, case_overview_text, get_case

    with db.session() as s:
        case = get_case(s, args.case, args.version)
        print(json.dumps(case_json(case), indent=1) if args.json else case_overview_text(case))
    return 0


def _export(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.export import export_coco
    from bmc_detectron.cases.labs import listed_lab

    images_dir = None if args.images_dir is None else Path(args.images_dir)
    with db.session() as s:
        coco = export_coco(s, db.store, args.cases, images_dir, listed_lab(None, args.lab))
    write_json_atomic(coco, args.output, indent=1)
    root = images_dir or db.store.root
    print(
        f"wrote {args.output}: {len(coco['images'])} image(s), {len(coco['annotations'])} "
        f"cell(s); merge with `bmc merge-labels --images-root` over {root}"
    )
    return 0


def _export_labelstudio(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases import export_labelstudio as ls
    from bmc_detectron.cases.labs import listed_lab

    lab = listed_lab(None, args.lab)
    with db.session() as s:
        out = ls.export_labelstudio(s, db.store, args.cases, args.signed_only, args.image_root, lab)
    config = Path(args.config) if args.config else Path(args.output).parent / "labeling.xml"
    write_json_atomic(out.tasks, args.output, indent=1)
    atomic_write_text(config, ls.labeling_config(out.labels))
    print("\n".join(ls.summary_lines(out, args.output, str(config))))
    return 0


def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            return Path(args.password_file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as e:
            raise CaseError(f"{args.password_file}: cannot read ({e.strerror or e})") from None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise CaseError("the two passwords differ")
    return first


def _add_user(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.users import add_user

    password = _password(args)
    with db.session() as s:
        add_user(s, args.name, password, args.role, args.user or _login(), args.lab)
    print(f"added {args.role} {args.name} (lab {args.lab or 'none: every lab'})")
    return 0


def _end_sessions(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.users import end_sessions

    with db.session() as s:
        epoch = end_sessions(s, args.name, args.user or _login())
    print(f"ended every session of {args.name} in the web page (session epoch now {epoch})")
    return 0


def _next(db: CaseDB, args: argparse.Namespace) -> int:
    from bmc_detectron.cases.export import unreviewed_table

    with db.session() as s:
        print(unreviewed_table(s, args.strategy, args.aggregate, args.budget))
    return 0


def _check(db: CaseDB, args: argparse.Namespace) -> int:
    report = db.check_integrity(create_amcheck=args.amcheck)
    print(report.text(str(db)))
    return 0 if report.ok else 1


JOBS: Dict[str, Callable[[CaseDB, argparse.Namespace], int]] = {
    "init": _init,
    "upgrade": _upgrade,
    "import": _import,
    "list": _list,
    "show": _show,
    "export-coco": _export,
    "export-labelstudio": _export_labelstudio,
    "add-user": _add_user,
    "end-sessions": _end_sessions,
    "next": _next,
    "check": _check,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:  # the cases extra: imported here, so that --help works without it
        from sqlalchemy.exc import SQLAlchemyError

        from bmc_detectron.cases.db import CaseDB, default_url
    except ImportError as e:
        print(
            f"error: bmc cases needs the cases extra ({e.name} is missing): "
            "pip install -e '.[cases]'",
            file=sys.stderr,
        )
        return 2
    url = args.db or default_url()
    images = None if args.images is None else Path(args.images)
    try:
        db = CaseDB(url, images, check=args.job not in ("init", "upgrade"))
        try:
            return JOBS[args.job](db, args)
        finally:
            db.close()
    except CaseError as e:
        print(f"error: {e}", file=sys.stderr)
    except SQLAlchemyError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: the case database {url}: {first}", file=sys.stderr)
    except OSError as e:
        print(f"error: {getattr(e, 'filename', None) or url}: {e.strerror or e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
