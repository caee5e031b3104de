// bench/index_peer.cpp - the peers of bench/index.c: FAISS (IndexFlatIP, IndexScalarQuantizer
// QT_8bit, IndexIVFFlat) and hnswlib, on the vectors bench/index wrote, in the same run.
//   index_peer DIR NLIST NSINGLE_FLAT NSINGLE_IVF
// DIR holds base.fvecs, query.fvecs and gt.ivecs (exact top-10 by inner product). Prints one
// name=value line per figure; bench/index reads them. Built by `make bench-index` with the
// flags `sh bench/peers.sh index_peer` prints (-DRETRLM_BENCH_FAISS, -DRETRLM_BENCH_HNSWLIB).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>
#include <sys/stat.h>
#ifdef RETRLM_BENCH_FAISS
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/index_io.h>
#endif
#ifdef RETRLM_BENCH_HNSWLIB
#include <hnswlib/hnswlib.h>
#endif

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static bool read_vecs(const std::string &path, std::vector<float> &out, size_t &n, int &d) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    std::fseek(f, 0, SEEK_END);
    long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    int32_t dd = 0;
    if (std::fread(&dd, 4, 1, f) != 1 || dd <= 0) { std::fclose(f); return false; }
    d = dd;
    n = (size_t)size / (4 + 4 * (size_t)d);
    out.resize(n * (size_t)d);
    std::fseek(f, 0, SEEK_SET);
    for (size_t i = 0; i < n; i++) {
        if (std::fread(&dd, 4, 1, f) != 1 || std::fread(&out[i * d], 4, (size_t)d, f) != (size_t)d) {
            std::fclose(f);
            return false;
        }
    }
    std::fclose(f);
    return true;
}

static size_t file_size(const std::string &p) {
    struct stat st;
    return stat(p.c_str(), &st) == 0 ? (size_t)st.st_size : 0;
}

static std::vector<int> gt;   // (nq, 10)
static const int K = 10;

static double recall(const std::vector<long> &ids, int nq) {
    long hit = 0;
    for (int q = 0; q < nq; q++)
        for (int i = 0; i < K; i++)
            for (int j = 0; j < K; j++)
                if (ids[(size_t)q * K + i] == gt[(size_t)q * K + j]) { hit++; break; }
    return (double)hit / ((double)nq * K);
}

int main(int argc, char **argv) {
    if (argc < 5) {
        std::fprintf(stderr, "usage: index_peer DIR NLIST NSINGLE_FLAT NSINGLE_IVF\n");
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0); // figures appear as they are taken
    std::string dir = argv[1];
    int nlist = std::atoi(argv[2]), ns_flat = std::atoi(argv[3]), ns_ivf = std::atoi(argv[4]);
    std::vector<float> xb, xq, gtf;
    size_t n, nq;
    int d, dq, dg;
    if (!read_vecs(dir + "/base.fvecs", xb, n, d) || !read_vecs(dir + "/query.fvecs", xq, nq, dq) ||
        !read_vecs(dir + "/gt.ivecs", gtf, nq, dg) || dq != d || dg != K) {
        std::fprintf(stderr, "index_peer: cannot read the vectors in %s\n", dir.c_str());
        return 1;
    }
    gt.resize(gtf.size());
    std::memcpy(gt.data(), gtf.data(), gt.size() * 4); // ivecs: same bytes, int32
    std::vector<long> ids((size_t)nq * K);
    std::vector<float> dist((size_t)nq * K);
    (void)ns_flat;
    (void)ns_ivf;
#ifdef RETRLM_BENCH_FAISS
    {
        std::printf("faiss=1\n");
        // flat
        faiss::IndexFlatIP flat(d);
        double t = now();
        flat.add((faiss::Index::idx_t)n, xb.data());
        std::printf("faiss_flat_add_s=%.4f\n", now() - t);
        t = now();
        flat.search((faiss::Index::idx_t)nq, xq.data(), K, dist.data(), ids.data());
        std::printf("faiss_flat_batch_qps=%.2f\n", nq / (now() - t));
        std::printf("faiss_flat_recall=%.4f\n", recall(ids, (int)nq));
        t = now();
        for (int q = 0; q < ns_flat; q++) flat.search(1, &xq[(size_t)q * d], K, &dist[(size_t)q * K], &ids[(size_t)q * K]);
        std::printf("faiss_flat_single_qps=%.2f\n", ns_flat / (now() - t));
        faiss::write_index(&flat, (dir + "/faiss_flat.idx").c_str());
        std::printf("faiss_flat_mem_bytes=%zu\n", n * (size_t)d * 4);
        std::printf("faiss_flat_disk_bytes=%zu\n", file_size(dir + "/faiss_flat.idx"));
        std::remove((dir + "/faiss_flat.idx").c_str());
    }
    {
        faiss::IndexScalarQuantizer sq(d, faiss::ScalarQuantizer::QT_8bit, faiss::METRIC_INNER_PRODUCT);
        double t = now();
        sq.train((faiss::Index::idx_t)n, xb.data());
        std::printf("faiss_sq8_train_s=%.4f\n", now() - t);
        t = now();
        sq.add((faiss::Index::idx_t)n, xb.data());
        std::printf("faiss_sq8_add_s=%.4f\n", now() - t);
        t = now();
        sq.search((faiss::Index::idx_t)nq, xq.data(), K, dist.data(), ids.data());
        std::printf("faiss_sq8_batch_qps=%.2f\n", nq / (now() - t));
        std::printf("faiss_sq8_recall=%.4f\n", recall(ids, (int)nq));
        t = now();
        for (int q = 0; q < ns_flat; q++) sq.search(1, &xq[(size_t)q * d], K, &dist[(size_t)q * K], &ids[(size_t)q * K]);
        std::printf("faiss_sq8_single_qps=%.2f\n", ns_flat / (now() - t));
        std::printf("faiss_sq8_mem_bytes=%zu\n", n * (size_t)d + 8 * (size_t)d);
    }
    {
        faiss::IndexFlatIP quantizer(d);
        faiss::IndexIVFFlat ivf(&quantizer, d, (size_t)nlist, faiss::METRIC_INNER_PRODUCT);
        double t = now();
        ivf.train((faiss::Index::idx_t)n, xb.data());
        std::printf("faiss_ivf_train_s=%.4f\n", now() - t);
        t = now();
        ivf.add((faiss::Index::idx_t)n, xb.data());
        std::printf("faiss_ivf_add_s=%.4f\n", now() - t);
        int probes[4] = {1, 4, 16, 64};
        for (int p : probes) {
            ivf.nprobe = (size_t)p;
            t = now();
            ivf.search((faiss::Index::idx_t)nq, xq.data(), K, dist.data(), ids.data());
            std::printf("faiss_ivf_np%d_batch_qps=%.2f\n", p, nq / (now() - t));
            std::printf("faiss_ivf_np%d_recall=%.4f\n", p, recall(ids, (int)nq));
            t = now();
            for (int q = 0; q < ns_ivf; q++) ivf.search(1, &xq[(size_t)q * d], K, &dist[(size_t)q * K], &ids[(size_t)q * K]);
            std::printf("faiss_ivf_np%d_single_qps=%.2f\n", p, ns_ivf / (now() - t));
        }
        faiss::write_index(&ivf, (dir + "/faiss_ivf.idx").c_str());
        std::printf("faiss_ivf_mem_bytes=%zu\n", n * ((size_t)d * 4 + 8) + (size_t)nlist * d * 4);
        std::printf("faiss_ivf_disk_bytes=%zu\n", file_size(dir + "/faiss_ivf.idx"));
        std::remove((dir + "/faiss_ivf.idx").c_str());
    }
#else
    std::printf("faiss=0\n");
#endif
#ifdef RETRLM_BENCH_HNSWLIB
    {
        std::printf("hnswlib=1\n");
        hnswlib::InnerProductSpace space((size_t)d);
        hnswlib::HierarchicalNSW<float> h(&space, n, 16, 100);
        double t = now();
        h.addPoint(&xb[0], 0);
#pragma omp parallel for schedule(dynamic, 256)
        for (long i = 1; i < (long)n; i++) h.addPoint(&xb[(size_t)i * d], (hnswlib::labeltype)i);
        std::printf("hnsw_build_s=%.4f\n", now() - t);
        int efs[5] = {10, 20, 40, 80, 160};
        for (int ef : efs) {
            h.setEf((size_t)ef);
            t = now();
#pragma omp parallel for schedule(dynamic, 8)
            for (long q = 0; q < (long)nq; q++) {
                auto res = h.searchKnn(&xq[(size_t)q * d], K);
                for (int i = K - 1; i >= 0; i--) {
                    ids[(size_t)q * K + i] = res.empty() ? -1 : (long)res.top().second;
                    if (!res.empty()) res.pop();
                }
            }
            std::printf("hnsw_ef%d_batch_qps=%.2f\n", ef, nq / (now() - t));
            std::printf("hnsw_ef%d_recall=%.4f\n", ef, recall(ids, (int)nq));
            t = now();
            for (int q = 0; q < ns_ivf; q++) (void)h.searchKnn(&xq[(size_t)q * d], K);
            std::printf("hnsw_ef%d_single_qps=%.2f\n", ef, ns_ivf / (now() - t));
        }
        h.saveIndex(dir + "/hnsw.idx");
        std::printf("hnsw_mem_bytes=%zu\n", file_size(dir + "/hnsw.idx"));
        std::remove((dir + "/hnsw.idx").c_str());
    }
#else
    std::printf("hnswlib=0\n");
#endif
    return 0;
}
