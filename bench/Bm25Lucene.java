// Bm25Lucene: the Lucene 8 peer of bench/bm25.c (run by it). Indexes the text column of
// debpkg/docs.tsv with EnglishAnalyzer (docs and freqs, no positions, one segment in document
// order so docID = id), runs the dev queries as a disjunction of the analysed terms, top 10, with
// BM25Similarity(K1, B) or, for SETTING "default", new BM25Similarity() (k1 1.2, b 0.75).
//   java -cp LUCENE_JARS:build/bench Bm25Lucene DATA_DIR SCRATCH_DIR RUN_FILE (default | K1 B)
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.nio.file.*;
import java.util.*;
import java.util.concurrent.*;
import org.apache.lucene.analysis.Analyzer;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.en.EnglishAnalyzer;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.document.*;
import org.apache.lucene.index.*;
import org.apache.lucene.search.*;
import org.apache.lucene.search.similarities.BM25Similarity;
import org.apache.lucene.store.FSDirectory;

public class Bm25Lucene {
    // TSV with escapes \\ \t \n \r; returns rows of fields, header dropped
    static List<String[]> readTsv(String path) throws IOException {
        List<String[]> rows = new ArrayList<>();
        boolean header = true;
        for (String line : Files.readAllLines(Paths.get(path), StandardCharsets.UTF_8)) {
            if (header) { header = false; continue; }
            String[] f = line.split("\t", -1);
            for (int i = 0; i < f.length; i++) f[i] = unescape(f[i]);
            rows.add(f);
        }
        return rows;
    }

    static String unescape(String s) {
        if (s.indexOf('\\') < 0) return s;
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char e = s.charAt(++i);
                b.append(e == 't' ? '\t' : e == 'n' ? '\n' : e == 'r' ? '\r' : e);
            } else b.append(c);
        }
        return b.toString();
    }

    static long statusKib(String key) {
        try {
            for (String l : Files.readAllLines(Paths.get("/proc/self/status")))
                if (l.startsWith(key + ":")) return Long.parseLong(l.replaceAll("[^0-9]", ""));
        } catch (IOException e) { }
        return 0;
    }

    static Query toQuery(Analyzer a, String text) throws IOException {
        BooleanQuery.Builder b = new BooleanQuery.Builder();
        try (TokenStream ts = a.tokenStream("text", text)) {
            CharTermAttribute t = ts.addAttribute(CharTermAttribute.class);
            ts.reset();
            while (ts.incrementToken()) b.add(new TermQuery(new Term("text", t.toString())), BooleanClause.Occur.SHOULD);
            ts.end();
        }
        return b.build();
    }

    static void search(IndexSearcher s, Analyzer a, List<String[]> qs, int from, int to, int[][] out) throws IOException {
        for (int q = from; q < to; q++) {
            TopDocs td = s.search(toQuery(a, qs.get(q)[1]), 10);
            out[q] = new int[td.scoreDocs.length];
            for (int i = 0; i < td.scoreDocs.length; i++) out[q][i] = td.scoreDocs[i].doc;
        }
    }

    public static void main(String[] args) throws Exception {
        List<String[]> docs = readTsv(args[0] + "/debpkg/docs.tsv");
        List<String[]> qs = readTsv(args[0] + "/debpkg/queries_dev.tsv");
        Path dir = Paths.get(args[1], "lucene.idx");
        long base = statusKib("VmRSS");
        Analyzer a = new EnglishAnalyzer();
        BM25Similarity sim = args[3].equals("default")
            ? new BM25Similarity()
            : new BM25Similarity(Float.parseFloat(args[3]), Float.parseFloat(args[4]));
        FieldType ft = new FieldType();
        ft.setIndexOptions(IndexOptions.DOCS_AND_FREQS);
        ft.setTokenized(true);
        ft.freeze();
        long t0 = System.nanoTime();
        try (FSDirectory fs = FSDirectory.open(dir)) {
            IndexWriterConfig cfg = new IndexWriterConfig(a);
            cfg.setSimilarity(sim);
            cfg.setOpenMode(IndexWriterConfig.OpenMode.CREATE);
            cfg.setMergePolicy(new LogDocMergePolicy()); // keeps document order
            cfg.setRAMBufferSizeMB(256);
            try (IndexWriter w = new IndexWriter(fs, cfg)) {
                for (String[] d : docs) {
                    Document doc = new Document();
                    doc.add(new Field("text", d[3], ft));
                    w.addDocument(doc);
                }
                w.forceMerge(1);
                w.commit();
            }
        }
        double build = (System.nanoTime() - t0) / 1e9;
        long bytes = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) bytes += Files.size(p);
        }
        int nq = qs.size();
        int[][] out = new int[nq][];
        double qps1, qps2;
        try (FSDirectory fs = FSDirectory.open(dir); DirectoryReader r = DirectoryReader.open(fs)) {
            IndexSearcher s = new IndexSearcher(r);
            s.setSimilarity(sim);
            for (int rep = 0; rep < 3; rep++) search(s, a, qs, 0, nq, out); // JIT warm-up
            t0 = System.nanoTime();
            search(s, a, qs, 0, nq, out);
            qps1 = nq / ((System.nanoTime() - t0) / 1e9);
            ExecutorService ex = Executors.newFixedThreadPool(2);
            t0 = System.nanoTime();
            Future<?> f1 = ex.submit(() -> { search(s, a, qs, 0, nq / 2, out); return null; });
            Future<?> f2 = ex.submit(() -> { search(s, a, qs, nq / 2, nq, out); return null; });
            f1.get();
            f2.get();
            qps2 = nq / ((System.nanoTime() - t0) / 1e9);
            ex.shutdown();
        }
        try (PrintWriter pw = new PrintWriter(new FileWriter(args[2]))) {
            for (int q = 0; q < nq; q++)
                for (int id : out[q]) pw.println(qs.get(q)[0] + " " + id);
        }
        System.out.printf("build_s=%.3f%nindex_bytes=%d%nmem_kib=%d%nqps1=%.0f%nqps2=%.0f%n", build, bytes,
                          statusKib("VmHWM") - base, qps1, qps2);
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) Files.delete(p);
        }
        Files.delete(dir);
    }
}
