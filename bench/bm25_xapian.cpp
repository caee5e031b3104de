// bm25_xapian: the Xapian peer of bench/bm25.c (run by it). Indexes the text column of
// debpkg/docs.tsv (docid = id + 1, Porter stemmer, Lucene's 33 English stop words, no
// positions), runs the dev queries, top 10, OR, with BM25Weight(k1 K1, k2 0, k3 1, b B,
// min_normlen 0.5) or, for SETTING "default", BM25Weight() (k1 1, k2 0, k3 1, b 0.5, min_normlen 0.5).
//   bm25_xapian DATA_DIR SCRATCH_DIR RUN_FILE (default | K1 B)    prints name=value lines
#include <xapian.h>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>
#include "bm25_data.h"

static const char *const stop33[] = {"a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if",
                                     "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that",
                                     "the", "their", "then", "there", "these", "they", "this", "to", "was",
                                     "will", "with"};

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

static long dir_bytes(const std::string &dir) {
    std::string cmd = "du -sb " + dir;
    FILE *p = popen(cmd.c_str(), "r");
    long v = 0;
    if (p) {
        if (fscanf(p, "%ld", &v) != 1) v = 0;
        pclose(p);
    }
    return v;
}

static void search(const std::string &dir, const debpkg *d, const Xapian::Weight *w, int from, int to,
                   std::vector<std::vector<long>> *out) {
    Xapian::Database db(dir);
    Xapian::Enquire enq(db);
    Xapian::QueryParser qp;
    Xapian::SimpleStopper stopper(stop33, stop33 + 33);
    qp.set_stemmer(Xapian::Stem("porter"));
    qp.set_stemming_strategy(Xapian::QueryParser::STEM_ALL);
    qp.set_stopper(&stopper);
    qp.set_default_op(Xapian::Query::OP_OR);
    qp.set_database(db);
    enq.set_weighting_scheme(*w); // a copy (clone) per Enquire
    for (int q = from; q < to; q++) {
        Xapian::Query query = qp.parse_query(tsv_get(&d->queries, q, 1), 0);
        enq.set_query(query);
        Xapian::MSet m = enq.get_mset(0, 10);
        (*out)[q].clear();
        for (Xapian::MSetIterator it = m.begin(); it != m.end(); ++it) (*out)[q].push_back((long)*it - 1);
    }
}

int main(int argc, char **argv) {
    bool def = argc == 5 && !strcmp(argv[4], "default");
    if (!def && argc != 6) return 2;
    Xapian::BM25Weight weight =
        def ? Xapian::BM25Weight() : Xapian::BM25Weight(atof(argv[4]), 0, 1, atof(argv[5]), 0.5);
    debpkg d;
    if (!debpkg_load(&d, argv[1])) return 1;
    std::string dir = std::string(argv[2]) + "/xapian.db";
    long base = proc_status_kib("VmRSS");
    double t0 = now();
    {
        Xapian::WritableDatabase db(dir, Xapian::DB_CREATE_OR_OVERWRITE);
        Xapian::TermGenerator tg;
        Xapian::SimpleStopper stopper(stop33, stop33 + 33);
        tg.set_stemmer(Xapian::Stem("porter"));
        tg.set_stemming_strategy(Xapian::TermGenerator::STEM_ALL);
        tg.set_stopper(&stopper);
        for (int i = 0; i < d.docs.n_rows; i++) {
            Xapian::Document doc;
            tg.set_document(doc);
            tg.index_text_without_positions(tsv_get(&d.docs, i, 3));
            db.replace_document((Xapian::docid)(atol(tsv_get(&d.docs, i, 0)) + 1), doc);
        }
        db.commit();
        db.compact(dir + ".c", Xapian::DBCOMPACT_SINGLE_FILE);
    }
    double build = now() - t0;
    std::string cdir = dir + ".c";
    int nq = d.queries.n_rows;
    std::vector<std::vector<long>> out(nq);
    search(cdir, &d, &weight, 0, nq, &out); // warm-up
    t0 = now();
    search(cdir, &d, &weight, 0, nq, &out);
    double qps1 = nq / (now() - t0);
    t0 = now();
    std::thread a(search, cdir, &d, &weight, 0, nq / 2, &out), b(search, cdir, &d, &weight, nq / 2, nq, &out);
    a.join();
    b.join();
    double qps2 = nq / (now() - t0);
    FILE *f = fopen(argv[3], "w");
    for (int q = 0; q < nq; q++)
        for (long id : out[q]) fprintf(f, "%s %ld\n", tsv_get(&d.queries, q, 0), id);
    fclose(f);
    printf("build_s=%.3f\nindex_bytes=%ld\nmem_kib=%ld\nqps1=%.0f\nqps2=%.0f\n", build, dir_bytes(cdir),
           proc_status_kib("VmHWM") - base, qps1, qps2);
    std::string rm = "rm -rf " + dir + " " + cdir;
    if (system(rm.c_str())) {}
    debpkg_free(&d);
    return 0;
}
