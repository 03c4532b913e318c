gunzip -f gpux/fuselab.gz gpux/fuselab-exp.gz; chmod +x gpux/fuselab gpux/fuselab-exp
R=$OUT/res; mkdir -p $R
for b in fuselab fuselab-exp fuselab fuselab-exp fuselab fuselab-exp; do
  i=$((i+1)); name="$b-$i"
  echo "== $name"
  FUSELAB=$PWD/gpux/$b WARMUP=2 PRECONNECT=1200 RATE=1100 N=11000 PORT=$((19200 + i)) timeout 100 \
    bash harness/http/bench/client-overhead.sh $R/$name > $R/$name.out 2>&1
  grep -E "TTFT  |ITL  |PASS|FAIL" $R/$name.out
  rm -f $R/$name/run/tokens.parquet $R/$name/trace.jsonl
done
tar czf $OUT/res.tgz -C $OUT res
