export FUSELAB=$PWD/gpu/fuselab
R=$OUT/res; mkdir -p $R
for w in 2 16 2 16 2 16; do
  i=$((i+1)); name="w$w-$i"
  echo "== client workers $w ($name)"
  FUSELAB_HARNESS_WORKERS=$w WARMUP=2 PRECONNECT=1200 RATE=1100 N=11000 PORT=$((19100 + i)) timeout 100 \
    bash harness/http/bench/client-overhead.sh $R/$name > $R/$name.out 2>&1
  grep -E "TTFT  |ITL  |PASS|FAIL" $R/$name.out
  rm -f $R/$name/run/tokens.parquet $R/$name/trace.jsonl
done
tar czf $OUT/res.tgz -C $OUT res
