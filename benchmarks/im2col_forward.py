"""XLA's conv forward against im2col (conv_general_dilated_patches + one matmul) for the wide
2-D convs a stacked-tap stage-2 encoder runs; prints one JSON line per shape.

  python benchmarks/im2col_forward.py

Why: XLA-CPU's conv runs at ~half the matmul rate, so a matmul formulation could win if building
the patches were cheap (benchmarks/README.md, "Stage 2").
"""
import time, json, jax, jax.numpy as jnp
from jax import lax

def bench(f, *a, n=3):
  f(*a).block_until_ready(); ts=[]
  for _ in range(n):
    t=time.perf_counter(); f(*a).block_until_ready(); ts.append(time.perf_counter()-t)
  return min(ts)

DN=("NHWC","HWIO","NHWC")
for (b,h,w,ci,co) in [(200,32,32,192,64),(200,16,16,384,128),(200,8,8,768,256),(100,64,64,192,64)]:
  x=jax.random.normal(jax.random.PRNGKey(0),(b,h,w,ci)); k=jax.random.normal(jax.random.PRNGKey(1),(3,3,ci,co))
  conv=jax.jit(lambda x,k: lax.conv_general_dilated(x,k,(1,1),"SAME",dimension_numbers=DN))
  def im2col(x,k):
    p=lax.conv_general_dilated_patches(x,(3,3),(1,1),"SAME",dimension_numbers=DN)  # (b,h,w,ci*9) order: c major
    kk=k.transpose(2,0,1,3).reshape(ci*9,co)
    return p@kk
  im=jax.jit(im2col)
  err=float(jnp.max(jnp.abs(conv(x,k)-im(x,k)))/jnp.max(jnp.abs(conv(x,k))))
  fl=2*b*h*w*ci*co*9
  tc,ti=bench(conv,x,k),bench(im,x,k)
  a=jax.random.normal(jax.random.PRNGKey(2),(2048,2048)); mm=jax.jit(lambda a:a@a); tm=bench(mm,a)
  print(json.dumps({"shape":[b,h,w,ci,co],"conv_s":round(tc,3),"im2col_s":round(ti,3),"conv_gflops":round(fl/tc/1e9,1),"im2col_gflops":round(fl/ti/1e9,1),"matmul_gflops":round(2*2048**3/tm/1e9,1),"rel_err":err}),flush=True)
