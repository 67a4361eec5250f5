"""`edge enrol`: a person from photos, or everyone on a signed USB stick (--from)."""

from __future__ import annotations

import sys
from pathlib import Path

from edge.errors import DoorlockError


def cmd_enrol(args) -> int:
    if args.stick:
        return cmd_enrol_stick(args)
    if not args.name or not args.photo:
        raise DoorlockError("enrol needs --name and --photo (or --from PATH for a USB stick)")
    from edge.enrolment.names import check_name  # a stick's rule for names (NFC, visible, 64 characters)
    args.name = check_name(args.name, "--name")
    from edge.app import gallery_file, load_models
    from edge.config import config_from_dict, load_config
    from edge.enrolment.enrol import EnrolError, enrol_face, read_enrol_photo
    from edge.vision.gallery import Gallery, GalleryError, featurenet_fingerprint, gallery_lock, load_gallery

    cfg = load_config(args.config) if args.config else config_from_dict({}, "defaults")
    cfg = cfg.with_options(bundle=args.bundle)
    gpath = gallery_file(args.gallery or cfg.recognition.gallery)
    parts = load_models(cfg, empty_gallery=True)
    fp = featurenet_fingerprint(parts.bundle)
    faces = []
    for photo in args.photo:
        try:
            face = enrol_face(read_enrol_photo(photo), parts.detector, parts.featurenet)
        except EnrolError as exc:
            print(f"rejected {photo}: {exc}", file=sys.stderr)
            continue
        faces.append(face)
        print(f"accepted {photo} (face {face.face_px:.0f} px, sharpness {face.sharpness:.0f})")
    if not faces:
        raise DoorlockError(f"no usable photo of {args.name}; gallery unchanged")

    with gallery_lock(gpath):  # load -> add -> save as one step against a USB enrolment
        try:
            gallery = load_gallery(gpath, fp, parts.bundle.metadata_sha256)
        except GalleryError:
            if gpath.exists():
                raise
            gallery = Gallery(fp, parts.featurenet.dim, bundle_sha256=parts.bundle.metadata_sha256)
        from edge.enrolment.names import same_person  # one person however the name is cased or spelt

        for other in same_person(gallery.names, args.name):
            if other != args.name:
                gallery.remove(other)
                print(f"replacing {other!r}: the same person as {args.name!r}")
        gallery.add_faces(args.name, faces, source="photos")
        try:
            gallery.save(gpath)
        except OSError as exc:  # a full or read-only disk: the save is atomic, the old one stays
            raise GalleryError(f"cannot save the gallery {gpath} ({exc.strerror or exc}); "
                               f"it is unchanged and {args.name!r} is not enrolled") from None
    print(f"enrolled {args.name!r} ({len(faces)} photo(s)) in {gpath}; {len(gallery)} people enrolled")
    return 0


def cmd_enrol_stick(args) -> int:
    """Enrolment from a USB stick: exit 0 when the gallery changed, 3 when the stick was
    applied but changed nothing (every photo rejected), 2 when the stick was refused."""
    from edge.app import gallery_file, load_models
    from edge.config import config_from_dict, load_config
    from edge.enrolment.enrol import enrol_face
    from edge.service.fsutil import atomic_write_bytes
    from edge.vision.gallery import featurenet_fingerprint
    from edge.enrolment.keys import load_key
    from edge.enrolment.stick import Stick, enrol_from_stick, put_report

    if args.copy_report:  # the service's second step: the stick is now mounted read-write
        try:
            text = Path(args.copy_report).read_text(encoding="utf-8")
        except OSError as exc:
            raise DoorlockError(f"{args.copy_report}: cannot read the report ({exc.strerror})") from None
        with Stick(args.stick) as stick:
            ok = put_report(stick, text)
        print("report written on the stick" if ok else "report not written: the stick is read-only")
        return 0 if ok else 1
    key = load_key(args.key)
    cfg = load_config(args.config) if args.config else config_from_dict({}, "defaults")
    cfg = cfg.with_options(bundle=args.bundle)
    gpath = gallery_file(args.gallery or cfg.recognition.gallery)
    parts = load_models(cfg, empty_gallery=True)

    def embed(image):
        return enrol_face(image, parts.detector, parts.featurenet)

    report = enrol_from_stick(args.stick, key, gpath, embed, featurenet_fingerprint(parts.bundle),
                              parts.featurenet.dim, write_report=args.report is None,
                              bundle_sha256=parts.bundle.metadata_sha256,
                              on_photo=lambda r: print(f"{'accepted' if r.accepted else 'rejected'} "
                                                       f"{r.person}: {r.path} ({r.reason})", flush=True))
    report_failed = None
    if args.report:  # after the gallery changed: a failure here must not hide that change
        try:
            atomic_write_bytes(Path(args.report), report.text().encode("utf-8"), mode=0o644)
            report.report_note = f"report written to {args.report}"
        except OSError as exc:
            report_failed = exc.strerror or str(exc)
            report.report_note = f"report not written to {args.report} ({report_failed})"
    for line in report.lines()[1:]:
        if not line.startswith(("accepted ", "rejected ")):
            print(line)
    print(report.report_note)
    if report_failed is not None:  # the lines above are the report, in the journal
        print(f"warning: report not written to {args.report} ({report_failed}); the "
              "gallery is as the result above says", file=sys.stderr)
    if report.refused is not None:
        print(f"error: stick refused: {report.refused}", file=sys.stderr)
        return 2
    return 0 if report.changed else 3
