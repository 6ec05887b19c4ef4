// serve_command.cpp — uffd-migrate serve: a source serving an image file or a synthetic guest.
#include <uffdm/uffdm.hpp>

#include <cstdio>
#include <memory>

#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/live_guest.hpp"
#include "cli/progress.hpp"
#include "cli/signals.hpp"
#include "cli/sizes.hpp"

namespace uffdm::cli {

namespace {

struct ServeArguments {
    SourceOptions options;
    std::string image;
    std::string synthetic;
    std::string page_size = "4K";
    SyntheticGuest guest;
    std::string json;
    // --live: the synthetic guest runs here (writers stamp pages) while it migrates.
    bool live = false;
    std::string memory = "anonymous";
    WriterSpec writers;
    std::string versions_file;
};

// The running guest's memory, filled with the synthetic content.
struct LiveGuest {
    std::vector<GuestMemory> memory;
    std::vector<std::span<std::byte>> spans;
};

std::expected<LiveGuest, std::string> map_live_guest(const SyntheticGuest& guest, MemoryKind kind) {
    LiveGuest live;
    std::uint32_t region = 0;
    for (std::uint64_t length : synthetic_region_lengths(guest)) {
        auto mapped = GuestMemory::allocate(kind, length);
        if (!mapped) {
            return std::unexpected(mapped.error().message);
        }
        for (std::uint64_t p = 0; p < length / guest.page_size; ++p) {
            synthetic_page_fill(guest, region, p, mapped->data() + p * guest.page_size);
        }
        live.spans.emplace_back(mapped->data(), mapped->size());
        live.memory.push_back(std::move(*mapped));
        ++region;
    }
    return live;
}

int serve(const ServeArguments& args) {
    auto page_size = parse_size(args.page_size);
    if (!page_size) {
        std::fprintf(stderr, "uffd-migrate serve: %s\n", page_size.error().c_str());
        return 2;
    }
    SourceOptions options = args.options;
    ProgressBar bar("serving  ");
    options.on_progress = [&bar](const SourceProgress& p) {
        if (p.connected) {
            bar.update(p.pages_sent, p.pages_total, p.bytes_sent,
                       "requests " + std::to_string(p.requests));
        }
    };
    std::expected<Source, Error> source = std::unexpected(Error{});
    std::optional<LiveGuest> live;
    std::unique_ptr<SourceWriters> writers;
    if (args.live) {
        auto size = parse_size(args.synthetic);
        auto kind = parse_memory_kind(args.memory);
        if (!size || !kind || args.synthetic.empty()) {
            std::fprintf(stderr,
                         "uffd-migrate serve: --live needs --synthetic SIZE and --memory: %s\n",
                         !size   ? size.error().c_str()
                         : !kind ? kind.error().message.c_str()
                                 : "");
            return 2;
        }
        SyntheticGuest guest = args.guest;
        guest.size = *size;
        guest.page_size = *page_size;
        auto mapped = map_live_guest(guest, *kind);
        if (!mapped) {
            std::fprintf(stderr, "uffd-migrate serve: %s\n", mapped.error().c_str());
            return 1;
        }
        live = std::move(*mapped);
        writers = std::make_unique<SourceWriters>(live->spans, guest, args.writers);
        options.live.enabled = true;
        options.live.kinds.assign(live->spans.size(), *kind);
        options.live.pause_guest = [&writers, &args] {
            writers->pause();
            if (!args.versions_file.empty()) {
                if (auto written = write_versions(args.versions_file, writers->versions());
                    !written) {
                    std::fprintf(stderr, "uffd-migrate serve: %s\n", written.error().c_str());
                }
            }
        };
        options.live.on_round = [](const RoundReport& r) {
            std::fprintf(stderr,
                         "round %u       %llu pages, %.3f s; %llu written meanwhile (%.0f/s)\n",
                         r.round, static_cast<unsigned long long>(r.pages), r.seconds,
                         static_cast<unsigned long long>(r.dirty_pages), r.dirty_pages_per_second);
        };
        std::vector<std::pair<const void*, std::size_t>> regions;
        for (auto span : live->spans) {
            regions.emplace_back(span.data(), span.size());
        }
        source = Source::create(regions, *page_size, options);
    } else if (!args.image.empty()) {
        source = Source::from_image(args.image, *page_size, options);
    } else {
        auto size = parse_size(args.synthetic);
        if (!size) {
            std::fprintf(stderr, "uffd-migrate serve: %s\n", size.error().c_str());
            return 2;
        }
        SyntheticGuest guest = args.guest;
        guest.size = *size;
        guest.page_size = *page_size;
        source = Source::synthetic(guest, options);
    }
    if (!source) {
        std::fprintf(stderr, "uffd-migrate serve: %s\n", source.error().message.c_str());
        return 1;
    }
    // The first line on stdout is where to connect (scripts and `demo` read it).
    std::printf("listening on %s\n", source->endpoint().c_str());
    std::fflush(stdout);
    if (writers) {
        writers->start();  // the guest runs while it migrates
    }
    StopOnSignal on_signal([&source](int) { source->stop(); });
    SourceStats stats = source->run();
    bar.finish();
    print_summary(stats, stdout);
    if (!stats.ok) {
        // Also where a parent (demo, a script) that reads only the first line sees it.
        std::fprintf(stderr, "uffd-migrate serve: failed: %s\n", stats.error.message.c_str());
    }
    if (!args.json.empty()) {
        if (auto written = write_json(args.json, to_json(stats)); !written) {
            std::fprintf(stderr, "uffd-migrate serve: %s\n", written.error().c_str());
            return 1;
        }
    }
    return stats.ok ? 0 : 1;
}

}  // namespace

std::function<int()> add_serve_command(CLI::App& app) {
    auto args = std::make_shared<ServeArguments>();
    CLI::App* command = app.add_subcommand(
        "serve", "Serve a guest's memory to one destination (the source of a migration)");
    command
        ->add_option("--listen", args->options.listen,
                     "tcp:HOST:PORT, tcp:[IPV6]:PORT or unix:PATH")
        ->required();
    auto* image = command->add_option("--image", args->image, "A memory image file")
                      ->check(CLI::ExistingFile);
    auto* synthetic = command->add_option("--synthetic", args->synthetic,
                                          "A deterministic synthetic guest of this size (e.g. 1G)");
    image->excludes(synthetic);
    command->add_option("--page-size", args->page_size, "Guest page size (4K, or 2M for hugetlbfs)")
        ->capture_default_str();
    command->add_option("--seed", args->guest.seed, "Synthetic guest: content seed")
        ->capture_default_str();
    command->add_option("--regions", args->guest.regions, "Synthetic guest: regions")
        ->capture_default_str()
        ->check(CLI::Range(1, 64));
    command->add_option("--zero-percent", args->guest.zero_percent, "Synthetic guest: zero pages")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    command
        ->add_option("--repeat-percent", args->guest.repeat_percent,
                     "Synthetic guest: pages with repeated content")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    add_content_option(*command, args->guest.content);
    add_security_options(*command, args->options.security);
    command->add_flag("--insecure", args->options.security.insecure,
                      "Listen off-host without authenticating clients");
    command->add_option_function<std::string>(
        "--socket-mode",
        [args](const std::string& text) {
            std::size_t used = 0;
            unsigned long mode = 01000;
            try {
                mode = std::stoul(text, &used, 8);
            } catch (const std::exception&) {
                used = 0;
            }
            if (used != text.size() || mode > 0777) {
                throw CLI::ValidationError("--socket-mode",
                                           "'" + text + "' is not an octal mode (0 to 777)");
            }
            args->options.security.unix_socket_mode = static_cast<std::uint32_t>(mode);
        },
        "unix: listeners: the socket file's mode, octal (default 600, whatever the umask)");
    command->add_option("--allow-uid", args->options.security.allowed_uids,
                        "unix: listeners: a user besides this one and root who may connect "
                        "(repeat for more)");
    add_data_path_option(*command, args->options.data_path);
    add_marking_options(*command, args->options.marking);
    add_stream_options(*command, args->options);
    add_timeout_options(*command, args->options.timeouts, &args->options.reconnect_timeout);
    command->add_option("--json", args->json, "Write a JSON report to this file");
    command->add_flag("--live", args->live,
                      "The synthetic guest runs here while it migrates: writer threads stamp its "
                      "pages (precopy rounds, then the switchover and postcopy)");
    command->add_option("--memory", args->memory, "--live: anonymous, shmem or hugetlb")
        ->capture_default_str();
    command
        ->add_option("--max-rounds", args->options.live.max_rounds,
                     "--live: precopy rounds before the switchover is forced")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    command->add_option("--source-writers", args->writers.writers, "--live: writer threads")
        ->capture_default_str()
        ->check(CLI::Range(0, 64));
    command
        ->add_option("--write-rate", args->writers.pages_per_second,
                     "--live: pages written per second, all writers (0: as fast as they can)")
        ->capture_default_str();
    command->add_option("--hot-set", args->writers.hot_percent, "--live: percent of pages written")
        ->capture_default_str()
        ->check(CLI::Range(0, 100));
    command->add_option("--versions-file", args->versions_file,
                        "--live: where to write each page's version when the guest pauses");
    return [command, args]() -> int {
        if (args->image.empty() && args->synthetic.empty()) {
            std::fprintf(stderr, "uffd-migrate serve: give --image FILE or --synthetic SIZE\n");
            return 2;
        }
        (void)command;
        return serve(*args);
    };
}

}  // namespace uffdm::cli
