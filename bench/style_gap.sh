#!/usr/bin/env bash
# bench/style_gap.sh - what limits the demo model on its test split. The
# shipped model (models/demo) is trained on Noto pictures only and tested on
# Twemoji pictures, a drawing style it never saw. This diagnostic trains the
# same recipe (etc/train/demo.json, same tokenizer, same number of pictures
# and steps) on a stream where half of the pictures are drawn in the test
# style, and prints test and val R@1 of that run beside the recipe's at equal
# steps. Test pictures stay unseen either way: a picture is a function of
# seed, split and index, and only train-split pictures are trained on.
# The figures it gave, step by step to 5,800: models/demo/MODEL.md, "What
# limits it".
#
# usage (from anywhere; it runs in the repository root):
#   bash bench/style_gap.sh
# environment (all optional):
#   WORK=/tmp/sightline-style-gap   scratch: corpora, runs, results
#   DATA=${SL_DATA_DIR:-data}       the packages of scripts/fetch-demo-data
#   SL=build/sightline              the binary
#   TRAIN=200000   training pictures of each run (the recipe's corpus size)
#   STEPS=1000     stop both runs after this step (the schedule keeps the
#                  recipe's 5,800 steps; 5800 runs them to the end, 53 min each
#                  on 2 cores)
#   RECIPE=DIR     an existing checkpoint of the recipe at step STEPS (skips
#                  training it again)
#   QUICK=1        tiny corpus and 20 steps: a dry run of the script
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/sightline-style-gap}
DATA=${DATA:-${SL_DATA_DIR:-data}}
SL=${SL:-build/sightline}
TRAIN=${TRAIN:-200000}
STEPS=${STEPS:-1000}
PY=/usr/bin/python3
if [ "${QUICK:-0}" = 1 ]; then TRAIN=2000 STEPS=20; fi
HALF=$((TRAIN / 2))
[ -x "$SL" ] || { echo "style_gap: no $SL (build first: scripts/test or cmake)" >&2; exit 1; }
[ -d "$DATA" ] || { echo "style_gap: no $DATA (run scripts/fetch-demo-data)" >&2; exit 1; }
DATA=$(realpath "$DATA")
for p in emoji-datasource-google emoji-datasource-twitter emojibase-data; do
    [ -d "$DATA/$p" ] || { echo "style_gap: no $DATA/$p (run scripts/fetch-demo-data)" >&2; exit 1; }
done
mkdir -p "$WORK"
log() { printf '[style_gap %s] %s\n' "$(date +%T)" "$*"; }

# 1. a data folder whose "google" pictures are the Twemoji ones: the corpus
#    builder then draws every split in the test style
twin="$WORK/twin-data"
if [ ! -d "$twin" ]; then
    mkdir -p "$twin/emoji-datasource-google/img/google"
    cp "$DATA"/emoji-datasource-google/{emoji.json,package.json,LICENSE} "$twin/emoji-datasource-google/"
    ln -s "$DATA/emoji-datasource-twitter/img/twitter/64" "$twin/emoji-datasource-google/img/google/64"
    ln -s "$DATA/emoji-datasource-twitter" "$twin/emoji-datasource-twitter"
    ln -s "$DATA/emojibase-data" "$twin/emojibase-data"
fi

# 2. the recipe's corpus (Noto) and the twin corpus (Twemoji), same seed
build() { # build OUT DATA N
    if [ ! -f "$1/dataset_emoji.json" ]; then
        log "corpus $1 ($3 training pictures)"
        "$SL" corpus build --data "$2" --out "$1" --train "$3" --quiet
    fi
}
build "$WORK/noto" "$DATA" "$TRAIN"
build "$WORK/twemoji" "$twin" "$HALF"

# 3. the mixed stream: Noto train pictures HALF+1..TRAIN, Twemoji train
#    pictures 1..HALF (other compositions than the Noto ones), val and test
#    of the recipe's corpus
mix="$WORK/mix"
mkdir -p "$mix/images"
for s in train val test; do ln -sfn "$WORK/noto/images/$s" "$mix/images/$s"; done
ln -sfn "$WORK/twemoji/images/train" "$mix/images/twtrain"
"$PY" - "$WORK/noto/dataset_emoji.json" "$WORK/twemoji/dataset_emoji.json" \
    "$mix/dataset_emoji.json" "$HALF" <<'EOF'
import json, sys
noto, tw, out, half = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a, b = json.load(open(noto)), json.load(open(tw))
train = [i for i in a["images"] if i["split"] == "train"][half:]
train += [dict(i, filepath="twtrain") for i in b["images"] if i["split"] == "train"]
images = train + [i for i in a["images"] if i["split"] != "train"]
sid = 0
for k, im in enumerate(images):
    im["imgid"], im["sentids"] = k, []
    for s in im["sentences"]:
        s["imgid"], s["sentid"] = k, sid
        im["sentids"].append(sid)
        sid += 1
json.dump({"images": images, "dataset": a.get("dataset", "emoji")}, open(out, "w"))
print("mixed stream: %d training pictures, %d of them Twemoji" %
      (len(train), sum(1 for i in train if i.get("filepath") == "twtrain")))
EOF

# 4. the recipe's tokenizer, then both runs
tok="$WORK/tokenizer"
[ -f "$tok/vocab.json" ] ||
    "$SL" tokenizer train --captions "$WORK/noto/captions_train.txt" --out "$tok" --vocab-size 4096
run() { # run NAME DATASET IMAGES
    local out="$WORK/run-$1"
    if [ ! -d "$out/step-$STEPS" ]; then
        log "training $1 to step $STEPS"
        "$SL" train --config etc/train/demo.json --tokenizer "$tok" --data "$2" --images "$3" \
            --out "$out" --stop-after "$STEPS" --quiet
    fi
}
recipe=${RECIPE:-}
if [ -z "$recipe" ]; then
    run recipe "$WORK/noto/dataset_emoji.json" "$WORK/noto/images"
    recipe="$WORK/run-recipe/step-$STEPS"
fi
run mixed "$mix/dataset_emoji.json" "$mix/images"

# 5. R@1 of both on the test split (Twemoji) and the val split (Noto)
r1() { # r1 CKPT SPLIT -> "i2t t2i"
    "$SL" eval retrieval --model "$1" --karpathy "$WORK/noto/dataset_emoji.json" \
        --images "$WORK/noto/images" --split "$2" --quiet --json "$WORK/r.json" >/dev/null
    "$PY" -c "import json; d = json.load(open('$WORK/r.json')); print('%.1f / %.1f' % (d['i2t']['r1'], d['t2i']['r1']))"
}
{
    echo "R@1 i2t / t2i at step $STEPS ($TRAIN training pictures, 1,000 test and 1,000 val pictures)"
    printf '%-34s %-14s %-14s\n' "training pictures" "test (Twemoji)" "val (Noto)"
    printf '%-34s %-14s %-14s\n' "Noto only (the recipe)" "$(r1 "$recipe" test)" "$(r1 "$recipe" val)"
    printf '%-34s %-14s %-14s\n' "half Noto, half Twemoji" \
        "$(r1 "$WORK/run-mixed/step-$STEPS" test)" "$(r1 "$WORK/run-mixed/step-$STEPS" val)"
} | tee "$WORK/summary.txt"
