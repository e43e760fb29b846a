"""Generate gen/ from proto/: messages, .pyi stubs, gRPC stubs and the descriptor image.

    python tools/gen_contracts.py           # rewrite gen/
    python tools/gen_contracts.py --check   # exit 1 if gen/ differs from what would be written

Third-party protos are never copied into the repository. They come from installed packages:
google/api/*.proto and google/rpc/*.proto from googleapis-common-protos, and
buf/validate/validate.proto from the serialized descriptor that protovalidate ships (no
package ships its source). No package ships that one as Python for the google.protobuf
runtime either, so its module is generated too, under our own namespace
(contextmesh._vendor.buf.validate): the wheel installs no top-level `buf`.

The descriptor image gen/contextmesh/contextmesh.binpb (all imports, source info) is what `buf lint`
and Envoy's gRPC-JSON transcoder read.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import pathlib
import re
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "gen"
IMAGE = pathlib.Path("contextmesh", "contextmesh.binpb")
"""Inside the generated package, so that an installed contextmesh carries it."""
ANY_TYPES = ["google/rpc/error_details.proto"]
"""Files the image holds though no contract imports them: the types our messages pack into a
google.protobuf.Any (Job.error_status carries a google.rpc.ErrorInfo). Envoy renders an Any as
JSON only when its type is in the image; otherwise it answers the call with a plain-text error."""
VENDOR_PACKAGE = "contextmesh._vendor"
"""Where third-party modules that no installed package provides are generated."""


def googleapis_include() -> pathlib.Path:
    """The site-packages folder that holds google/api/*.proto (google is a namespace package)."""
    from google.api import annotations_pb2

    return pathlib.Path(annotations_pb2.__file__).resolve().parents[2]


def protovalidate_descriptor_set(out: pathlib.Path) -> None:
    """Write a FileDescriptorSet holding buf/validate/validate.proto and the WKTs it imports."""
    import protovalidate
    from google.protobuf import (
        descriptor_pb2,
        duration_pb2,
        field_mask_pb2,
        timestamp_pb2,
    )

    source = pathlib.Path(protovalidate.__file__).parent / "_gen/buf/validate/validate_pb.py"
    serialized = _file_desc_bytes(source.read_text())
    fds = descriptor_pb2.FileDescriptorSet()
    for dep in (descriptor_pb2, duration_pb2, field_mask_pb2, timestamp_pb2):
        dep.DESCRIPTOR.CopyToProto(fds.file.add())
    fds.file.add().ParseFromString(serialized)
    out.write_bytes(fds.SerializeToString())


def _file_desc_bytes(module_source: str) -> bytes:
    """The bytes literal passed to file_desc(...) in protovalidate's generated module."""
    for node in ast.walk(ast.parse(module_source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "file_desc"
        ):
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise RuntimeError("protovalidate's validate_pb.py no longer holds a file_desc(bytes) call")


def generate(out_dir: pathlib.Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        validate_set = pathlib.Path(tmp) / "validate.binpb"
        protovalidate_descriptor_set(validate_set)
        common = [
            "protoc",
            f"--descriptor_set_in={validate_set}",
            f"-I{PROTO_DIR}",
            f"-I{googleapis_include()}",
            f"-I{_grpc_tools_include()}",
        ]
        messages = [f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
        _run([*common, *messages, f"--grpc_python_out={out_dir}", *protos])
        _run([*common, *messages, "buf/validate/validate.proto"])
        (out_dir / IMAGE.parent).mkdir(exist_ok=True)
        image = [f"--descriptor_set_out={out_dir / IMAGE}"]
        _run([*common, "--include_imports", "--include_source_info", *image, *protos, *ANY_TYPES])
    vendor(out_dir, "buf")
    # Regular packages, so gen/ installs as an ordinary import root.
    folder = out_dir / "contextmesh"
    for sub in [folder, *[p for p in folder.rglob("*") if p.is_dir()]]:
        (sub / "__init__.py").touch()


def vendor(out_dir: pathlib.Path, package: str) -> None:
    """Move the generated top-level `package` under VENDOR_PACKAGE and point every import of it
    there.

    protoc's Python generator names a module after its .proto path and has no option to put
    it elsewhere, so the imports are rewritten here. Only the Python module path changes: the
    .proto file keeps its name and proto package (buf/validate/validate.proto, buf.validate) in
    the descriptor pool, which is what protovalidate and protoc's generated code look up.
    """
    target = out_dir.joinpath(*VENDOR_PACKAGE.split("."), package)
    target.parent.mkdir(parents=True)
    (out_dir / package).rename(target)
    # `from buf.validate import x_pb2` in modules and stubs, and the module name that
    # BuildTopDescriptorsAndMessages gives the vendored module's classes.
    imports = re.compile(rf"^from {package}\b", re.MULTILINE)
    module_name = re.compile(rf"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, '){package}\b")
    for path in [*out_dir.rglob("*.py"), *out_dir.rglob("*.pyi")]:
        text = path.read_text()
        text = imports.sub(f"from {VENDOR_PACKAGE}.{package}", text)
        text = module_name.sub(rf"\g<1>{VENDOR_PACKAGE}.{package}", text)
        if re.search(rf"^\s*(from|import) {package}\b", text, re.MULTILINE):
            raise RuntimeError(f"{path}: an import of {package} that vendor() does not rewrite")
        path.write_text(text)


def _grpc_tools_include() -> pathlib.Path:
    import grpc_tools

    return pathlib.Path(grpc_tools.__file__).parent / "_proto"


def _run(args: list[str]) -> None:
    from grpc_tools import protoc

    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args[1:])}")


def _differences(a: pathlib.Path, b: pathlib.Path) -> list[str]:
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in gen/: {n}" for n in cmp.left_only]
    out += [f"missing from gen/: {n}" for n in cmp.right_only]
    out += [f"differs: {n}" for n in cmp.diff_files]
    # dircmp compares by stat signature first; compare contents for files it called equal.
    out += [f"differs: {n}" for n in cmp.same_files if (a / n).read_bytes() != (b / n).read_bytes()]
    for name, _sub in cmp.subdirs.items():
        out += [f"{name}/{d}" for d in _differences(a / name, b / name)]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if gen/ is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = pathlib.Path(tmp) / "gen"
        fresh.mkdir()
        generate(fresh)
        if args.check:
            diffs = _differences(GEN_DIR, fresh) if GEN_DIR.exists() else ["gen/ is missing"]
            if diffs:
                print("gen/ is stale; run: python tools/gen_contracts.py", file=sys.stderr)
                print("\n".join(f"  {d}" for d in diffs), file=sys.stderr)
                return 1
            print("gen/ is up to date")
            return 0
        if GEN_DIR.exists():
            shutil.rmtree(GEN_DIR)
        shutil.copytree(fresh, GEN_DIR)
        print(f"wrote {GEN_DIR.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
